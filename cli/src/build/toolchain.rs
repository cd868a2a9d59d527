//! The two gcc toolchains: finding them (with the Debian package to install
//! when one is missing), their versions, and running compiler, assembler,
//! objcopy and linker with errors passed through.

use super::layout::Isa;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Flags for every compilation, on both ISAs.
pub const COMMON_FLAGS: &[&str] = &[
    "-O0",
    "-g",
    "-fno-omit-frame-pointer",
    "-fno-inline",
    "-fno-stack-protector",
    "-fno-pie",
    "-fsigned-char",
    "-ffunction-sections",
    "-fdata-sections",
    "-fno-common",
];

/// Flags for linking, on both ISAs.
pub const LINK_FLAGS: &[&str] = &["-static", "-no-pie"];

pub fn isa_flags(isa: Isa) -> &'static [&'static str] {
    match isa {
        Isa::X86_64 => &["-mno-red-zone"],
        Isa::Aarch64 => &[],
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{isa} tool {tool} not found; install it with: apt-get install {package}")]
    Missing {
        isa: Isa,
        tool: String,
        package: &'static str,
    },
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: String,
        source: std::io::Error,
    },
    #[error("{what} failed for {isa}:\n{output}")]
    Failed {
        isa: Isa,
        what: String,
        output: String,
    },
}

/// One ISA's tools.
#[derive(Debug, Clone)]
pub struct Toolchain {
    pub isa: Isa,
    pub cc: PathBuf,
    pub objcopy: PathBuf,
    /// First line of `cc --version`.
    pub cc_version: String,
    /// First line of `ld --version` (the ld the driver uses).
    pub ld_version: String,
}

/// `name` if it contains a slash and exists, else its first match in $PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn first_line(tool: &Path, args: &[&str]) -> String {
    Command::new(tool)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_owned())
        })
        .unwrap_or_default()
}

impl Toolchain {
    /// Finds the ISA's gcc and objcopy. `$POPCORN_CC_X86_64` /
    /// `$POPCORN_CC_AARCH64` override the compiler.
    pub fn find(isa: Isa) -> Result<Toolchain, ToolError> {
        let native = match isa {
            Isa::X86_64 => cfg!(target_arch = "x86_64"),
            Isa::Aarch64 => cfg!(target_arch = "aarch64"),
        };
        let (env, triple, cross_package, cross_binutils) = match isa {
            Isa::X86_64 => (
                "POPCORN_CC_X86_64",
                "x86_64-linux-gnu",
                "gcc-x86-64-linux-gnu libc6-dev-amd64-cross",
                "binutils-x86-64-linux-gnu",
            ),
            Isa::Aarch64 => (
                "POPCORN_CC_AARCH64",
                "aarch64-linux-gnu",
                "gcc-aarch64-linux-gnu libc6-dev-arm64-cross",
                "binutils-aarch64-linux-gnu",
            ),
        };
        let mut candidates = vec![format!("{triple}-gcc")];
        let mut objcopies = vec![format!("{triple}-objcopy")];
        if native {
            candidates.push("gcc".to_owned());
            objcopies.push("objcopy".to_owned());
        }
        let (package, binutils) = if native {
            ("gcc libc6-dev", "binutils")
        } else {
            (cross_package, cross_binutils)
        };
        let wanted: Vec<String> = match std::env::var(env) {
            Ok(v) if !v.is_empty() => vec![v],
            _ => candidates,
        };
        let cc = wanted
            .iter()
            .find_map(|c| which(c))
            .ok_or_else(|| ToolError::Missing {
                isa,
                tool: wanted.join(" or "),
                package,
            })?;
        let objcopy =
            objcopies
                .iter()
                .find_map(|c| which(c))
                .ok_or_else(|| ToolError::Missing {
                    isa,
                    tool: objcopies.join(" or "),
                    package: binutils,
                })?;
        let cc_version = first_line(&cc, &["--version"]);
        let ld = first_line(&cc, &["-print-prog-name=ld"]);
        let ld_version = if ld.is_empty() {
            String::new()
        } else {
            first_line(Path::new(&ld), &["--version"])
        };
        Ok(Toolchain {
            isa,
            cc,
            objcopy,
            cc_version,
            ld_version,
        })
    }

    /// Runs `tool args`; on failure returns its stderr (and stdout) as the
    /// error. On success returns its stderr (warnings).
    pub fn run<I, S>(&self, tool: &Path, args: I, what: &str) -> Result<String, ToolError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = Command::new(tool)
            .args(args)
            .output()
            .map_err(|source| ToolError::Spawn {
                tool: tool.display().to_string(),
                source,
            })?;
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !stdout.trim().is_empty() {
                text.push_str(&stdout);
            }
            return Err(ToolError::Failed {
                isa: self.isa,
                what: what.to_owned(),
                output: text.trim_end().to_owned(),
            });
        }
        Ok(text)
    }
}
