//! The contract with the popcorn C runtime and `popcorn build`, in one place.
//!
//! The thread is stopped inside [`MIGRATE_POINT`] (possibly in its callee [`MIGRATE_STOP`] or in
//! libc below that). The translated thread resumes as if [`MIGRATE_POINT`] had just returned to
//! its caller. Frames are rebuilt up to [`OUTERMOST_FUNCTION`] (or the outermost function that
//! has DWARF, for thread entries).

/// The function application code calls to offer a migration.
pub const MIGRATE_POINT: &str = "popcorn_migrate_point";
/// The runtime's callee of [`MIGRATE_POINT`] in which the thread actually stops.
pub const MIGRATE_STOP: &str = "__popcorn_migrate_stop";
/// The outermost application frame of the main thread.
pub const OUTERMOST_FUNCTION: &str = "main";
/// Callee name used in call-site keys for indirect calls.
pub const INDIRECT_CALLEE: &str = "<indirect>";
/// At most this many frames are unwound (Popcorn uses 512 too).
pub const MAX_FRAMES: usize = 512;
/// Flags the binaries must be built with (documented for the build tool and the error texts).
pub const REQUIRED_CFLAGS: &str = "-O0 -g -fno-omit-frame-pointer -fno-inline \
     -fno-stack-protector -static -no-pie -fsigned-char (-mno-red-zone on x86_64)";
