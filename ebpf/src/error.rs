//! Why tracing could not start or a map operation failed.

use std::error::Error as StdError;
use std::io;

/// An error of the eBPF tracer. [`EbpfError::is_unavailable`] tells a
/// machine that cannot trace (no BTF, no privilege) from a real failure, so
/// the agent can run without tracing and say why.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("eBPF tracing unavailable: the kernel has no BTF ({path} missing; needs CONFIG_DEBUG_INFO_BTF)")]
    NoBtf { path: &'static str },
    #[error("eBPF tracing unavailable: not permitted to load BPF programs ({what}); run as root or with CAP_BPF and CAP_PERFMON")]
    NotPermitted {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot read kernel BTF")]
    Btf(#[from] aya::BtfError),
    #[error("cannot load the eBPF object")]
    Load(#[source] aya::EbpfError),
    #[error("eBPF program {name} (hook {hook}) failed to load or attach")]
    Program {
        name: &'static str,
        hook: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF object has no {kind} named {name}")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("eBPF map {name} operation failed")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("invalid tgid {0}")]
    InvalidTgid(u32),
    #[error("no process {0} in this PID namespace")]
    NoSuchProcess(u32),
    #[error("cannot read the ns_pids BPF iterator: {reason}")]
    Iterator { reason: String },
}

impl EbpfError {
    /// True when this machine or process cannot trace at all (no BTF, no
    /// privilege): run without tracing rather than fail.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            EbpfError::NoBtf { .. } | EbpfError::NotPermitted { .. }
        )
    }

    /// Turns a load error caused by EPERM/EACCES into `NotPermitted`.
    pub(crate) fn classify(self) -> EbpfError {
        let Some(io) = permission_error(&self) else {
            return self;
        };
        // The whole chain but the final errno, which is the source.
        let mut what = self.to_string();
        let mut cur = StdError::source(&self);
        while let Some(e) = cur {
            if e.source().is_none() && e.downcast_ref::<io::Error>().is_some() {
                break;
            }
            let text = e.to_string();
            if !what.ends_with(&text) {
                what = format!("{what}: {text}");
            }
            cur = e.source();
        }
        EbpfError::NotPermitted {
            what,
            source: io::Error::from_raw_os_error(io),
        }
    }
}

/// The errno of the first EPERM/EACCES `io::Error` in the source chain.
fn permission_error(err: &(dyn StdError + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(code) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
            .filter(|&c| c == libc::EPERM || c == libc::EACCES)
        {
            return Some(code);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eperm_in_the_chain_is_unavailable() {
        let e = EbpfError::Map {
            name: "X",
            source: aya::maps::MapError::CreateError {
                name: "X".into(),
                io_error: io::Error::from_raw_os_error(libc::EPERM),
            },
        }
        .classify();
        assert!(e.is_unavailable(), "{e:?}");
        assert!(e.to_string().contains("CAP_BPF"));
    }

    #[test]
    fn other_errors_stay() {
        let e = EbpfError::Map {
            name: "X",
            source: aya::maps::MapError::CreateError {
                name: "X".into(),
                io_error: io::Error::from_raw_os_error(libc::EINVAL),
            },
        }
        .classify();
        assert!(!e.is_unavailable());
        assert!(matches!(e, EbpfError::Map { .. }));
    }
}
