//! Capability names and the five capability sets, applied the way runc does (bounding set
//! before the user switch; permitted, effective and inheritable via `capset`; ambient after).

use ctinit_proto::CapabilitySets;

use crate::sys::{self, Failure};

/// Every capability the helper knows, by number. A name outside this list is an error; a name
/// in it that the running kernel lacks is skipped, as runc does.
const NAMES: &[&str] = &ctinit_proto::CAPABILITY_NAMES;

/// The capability number for a name such as `CAP_CHOWN` (case-insensitive, like the OCI
/// tools accept it).
pub fn number(name: &str) -> Option<u32> {
    NAMES
        .iter()
        .position(|known| known.eq_ignore_ascii_case(name))
        .map(|n| n as u32)
}

/// One set as a bit mask, keeping only capabilities up to `last_cap` (the kernel's highest).
pub fn mask(names: &[String], last_cap: u32) -> Result<u64, String> {
    let mut bits = 0u64;
    for name in names {
        let n = number(name).ok_or_else(|| format!("unknown capability {name:?}"))?;
        if n <= last_cap {
            bits |= 1 << n;
        }
    }
    Ok(bits)
}

/// The five sets resolved to masks against the running kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Masks {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
    pub last_cap: u32,
}

impl Masks {
    pub fn resolve(sets: &CapabilitySets, last_cap: u32) -> Result<Masks, String> {
        Ok(Masks {
            bounding: mask(&sets.bounding, last_cap)?,
            effective: mask(&sets.effective, last_cap)?,
            permitted: mask(&sets.permitted, last_cap)?,
            inheritable: mask(&sets.inheritable, last_cap)?,
            ambient: mask(&sets.ambient, last_cap)?,
            last_cap,
        })
    }

    /// Drops every capability not in the bounding set. Needs CAP_SETPCAP, so it runs before
    /// the user switch.
    pub fn apply_bounding(&self) -> Result<(), Failure> {
        for cap in 0..=self.last_cap {
            if self.bounding & (1 << cap) != 0 {
                continue;
            }
            // Already gone (e.g. LXC dropped it): nothing to do, and no CAP_SETPCAP needed.
            if !sys::capbset_read(cap)? {
                continue;
            }
            sys::capbset_drop(cap)
                .map_err(|e| e.context(format!("drop {} from the bounding set", name(cap))))?;
        }
        Ok(())
    }

    /// Sets permitted, effective and inheritable exactly, then the ambient set.
    pub fn apply_sets(&self) -> Result<(), Failure> {
        sys::capset(self.effective, self.permitted, self.inheritable)?;
        sys::ambient_clear()?;
        for cap in 0..=self.last_cap {
            if self.ambient & (1 << cap) != 0 {
                sys::ambient_raise(cap)
                    .map_err(|e| e.context(format!("raise ambient {}", name(cap))))?;
            }
        }
        Ok(())
    }
}

pub fn name(cap: u32) -> &'static str {
    NAMES.get(cap as usize).copied().unwrap_or("CAP_?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_kernel_numbers() {
        assert_eq!(number("CAP_CHOWN"), Some(0));
        assert_eq!(number("CAP_SETPCAP"), Some(8));
        assert_eq!(number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(number("CAP_SYS_RESOURCE"), Some(24));
        assert_eq!(number("CAP_AUDIT_READ"), Some(37));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("cap_kill"), Some(5));
        assert_eq!(number("KILL"), None);
        assert_eq!(number("CAP_NOPE"), None);
    }

    #[test]
    fn unknown_name_is_an_error_naming_it() {
        let err = mask(&["CAP_KILL".into(), "CAP_FLY".into()], 40).unwrap_err();
        assert!(err.contains("CAP_FLY"), "{err}");
    }

    #[test]
    fn names_beyond_the_kernel_are_skipped() {
        let names = vec!["CAP_BPF".to_string(), "CAP_CHOWN".to_string()];
        assert_eq!(mask(&names, 40).unwrap(), (1 << 39) | 1);
        assert_eq!(mask(&names, 38).unwrap(), 1);
    }

    #[test]
    fn resolve_builds_all_five_masks() {
        let sets = CapabilitySets {
            bounding: vec!["CAP_KILL".into(), "CAP_NET_BIND_SERVICE".into()],
            effective: vec!["CAP_KILL".into()],
            inheritable: vec![],
            permitted: vec!["CAP_KILL".into()],
            ambient: vec!["CAP_NET_BIND_SERVICE".into()],
        };
        let m = Masks::resolve(&sets, 40).unwrap();
        assert_eq!(m.bounding, (1 << 5) | (1 << 10));
        assert_eq!(m.effective, 1 << 5);
        assert_eq!(m.permitted, 1 << 5);
        assert_eq!(m.inheritable, 0);
        assert_eq!(m.ambient, 1 << 10);
    }
}
