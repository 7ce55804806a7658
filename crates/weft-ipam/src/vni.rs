//! VXLAN network identifiers: every virtual network needs one, unique cluster-wide.
//!
//! Unlike addresses, VNIs are handed out lowest-free-first: they are not seen by
//! workloads, so reusing a released one at once causes no stale state, and small
//! numbers are easier to read in `vif`/`rt` output.

use std::collections::BTreeMap;

use crate::error::IpamError;
use crate::ranges::FreeRanges;

/// Largest VNI: the VXLAN header field is 24 bits wide.
pub const VNI_MAX: u32 = (1 << 24) - 1;

/// Allocates VNIs from `min..=max` (weft uses `1..=VNI_MAX`), each with an owner
/// (e.g. `VirtualNetwork default-domain:k8s-default:k8s-default-pod-network`).
///
/// Like [`Pool`](crate::Pool), it is pure in-memory state rebuilt after a restart by
/// [`reserve`](VniAllocator::reserve)-ing the VNIs recorded on stored networks.
#[derive(Debug, Clone)]
pub struct VniAllocator {
    min: u32,
    max: u32,
    /// Free VNIs as offsets from `min`.
    free: FreeRanges,
    owners: BTreeMap<u32, String>,
}

impl VniAllocator {
    /// An allocator over `min..=max`, all free. Refuses an empty range or one that
    /// does not fit in 24 bits.
    pub fn new(min: u32, max: u32) -> Result<Self, IpamError> {
        if min > max || max > VNI_MAX {
            return Err(IpamError::InvalidVniRange { min, max });
        }
        let len = u128::from(max - min) + 1;
        Ok(Self {
            min,
            max,
            free: FreeRanges::all(len),
            owners: BTreeMap::new(),
        })
    }

    /// Assigns the lowest free VNI to `owner`.
    pub fn allocate(&mut self, owner: &str) -> Result<u32, IpamError> {
        let vni = self
            .free
            .first_at_or_after(0)
            .and_then(|offset| u32::try_from(offset).ok())
            .and_then(|offset| self.min.checked_add(offset));
        let Some(vni) = vni else {
            return Err(IpamError::VniExhausted {
                min: self.min,
                max: self.max,
                in_use: self.in_use(),
            });
        };
        self.free.take(self.offset(vni));
        self.owners.insert(vni, owner.to_owned());
        Ok(vni)
    }

    /// Assigns the specific `vni` to `owner` (a user-requested VNI, or one restored
    /// from storage). Idempotent for the same owner; refuses a VNI outside the range or
    /// held by someone else, naming them.
    pub fn reserve(&mut self, vni: u32, owner: &str) -> Result<(), IpamError> {
        if vni < self.min || vni > self.max {
            return Err(IpamError::VniOutOfRange {
                vni,
                min: self.min,
                max: self.max,
            });
        }
        if let Some(current) = self.owners.get(&vni) {
            if current == owner {
                return Ok(());
            }
            return Err(IpamError::VniInUse {
                vni,
                owner: current.clone(),
            });
        }
        self.free.take(self.offset(vni));
        self.owners.insert(vni, owner.to_owned());
        Ok(())
    }

    /// Frees `vni` and returns who held it; `None` (and no change) if it was free.
    pub fn release(&mut self, vni: u32) -> Option<String> {
        let owner = self.owners.remove(&vni)?;
        self.free.give(self.offset(vni));
        Some(owner)
    }

    /// Who holds `vni`, if anyone.
    pub fn owner(&self, vni: u32) -> Option<&str> {
        self.owners.get(&vni).map(String::as_str)
    }

    /// Number of assigned VNIs.
    pub fn in_use(&self) -> u32 {
        // At most VNI_MAX + 1 entries, which fits in u32.
        self.owners.len() as u32
    }

    /// Number of VNIs in the range.
    pub fn capacity(&self) -> u32 {
        self.max - self.min + 1
    }

    /// Every assignment as (VNI, owner), in VNI order.
    pub fn allocations(&self) -> impl Iterator<Item = (u32, &str)> {
        self.owners.iter().map(|(vni, owner)| (*vni, owner.as_str()))
    }

    fn offset(&self, vni: u32) -> u128 {
        u128::from(vni - self.min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vnis() -> VniAllocator {
        VniAllocator::new(1, VNI_MAX).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn allocates_lowest_free_first() {
        let mut v = vnis();
        assert_eq!(v.allocate("a"), Ok(1));
        assert_eq!(v.allocate("b"), Ok(2));
        assert_eq!(v.reserve(4, "c"), Ok(()));
        assert_eq!(v.allocate("d"), Ok(3));
        assert_eq!(v.allocate("e"), Ok(5));
        assert_eq!(v.release(2), Some("b".to_owned()));
        assert_eq!(v.allocate("f"), Ok(2));
        assert_eq!(v.in_use(), 5);
        assert_eq!(v.owner(4), Some("c"));
        assert_eq!(
            v.allocations().map(|(n, _)| n).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn reserve_rules_match_addresses() {
        let mut v = VniAllocator::new(1, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            v.reserve(0, "a"),
            Err(IpamError::VniOutOfRange {
                vni: 0,
                min: 1,
                max: 10
            })
        );
        assert_eq!(
            v.reserve(11, "a"),
            Err(IpamError::VniOutOfRange {
                vni: 11,
                min: 1,
                max: 10
            })
        );
        assert_eq!(v.reserve(7, "VirtualNetwork a"), Ok(()));
        assert_eq!(v.reserve(7, "VirtualNetwork a"), Ok(()));
        let err = v.reserve(7, "VirtualNetwork b");
        assert_eq!(
            err,
            Err(IpamError::VniInUse {
                vni: 7,
                owner: "VirtualNetwork a".into()
            })
        );
        assert_eq!(
            err.err().map(|e| e.to_string()).as_deref(),
            Some("VNI 7 is already assigned to VirtualNetwork a; release it there first or pick another VNI")
        );
        assert_eq!(v.in_use(), 1);
    }

    #[test]
    fn release_of_a_free_vni_is_a_no_op() {
        let mut v = vnis();
        assert_eq!(v.release(9), None);
        assert_eq!(v.release(0), None);
        assert_eq!(v.release(VNI_MAX + 5), None);
        assert_eq!(v.in_use(), 0);
    }

    #[test]
    fn exhaustion_and_invalid_ranges() {
        let mut v = VniAllocator::new(VNI_MAX - 1, VNI_MAX).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.capacity(), 2);
        assert_eq!(v.allocate("a"), Ok(VNI_MAX - 1));
        assert_eq!(v.allocate("b"), Ok(VNI_MAX));
        assert_eq!(
            v.allocate("c"),
            Err(IpamError::VniExhausted {
                min: VNI_MAX - 1,
                max: VNI_MAX,
                in_use: 2
            })
        );
        assert_eq!(
            VniAllocator::new(5, 4).err(),
            Some(IpamError::InvalidVniRange { min: 5, max: 4 })
        );
        assert!(VniAllocator::new(1, VNI_MAX + 1).is_err());
        assert_eq!(VniAllocator::new(0, 0).map(|v| v.capacity()), Ok(1));
    }
}
