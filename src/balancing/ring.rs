//! The consistent-hash ring of a service: a pure function of its target list, so every node maps
//! a key to the same target (API.md §3.2). Hashes are FNV-1a with a 64-bit finaliser: stable
//! across processes, versions and platforms, unlike std's randomly keyed SipHash.

/// Virtual nodes per target: enough that each target's share of the ring stays within a few
/// percent of 1/N.
pub const VNODES: u32 = 160;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A stable 64-bit hash of the concatenation of `parts`.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    fmix64(fnv1a(parts))
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    h
}

/// MurmurHash3's finaliser: FNV-1a alone changes mostly low bits for keys that differ in their
/// last byte, which would cluster ring points; this spreads every input bit over the word.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[derive(Debug)]
pub struct Ring {
    /// `(point, target index)`, sorted by point then index.
    points: Box<[(u64, u32)]>,
}

impl Ring {
    /// `urls[i]` is target `i`'s URL as configured; its points depend on the URL only, so adding
    /// a target moves only the keys that land on the new target's points.
    pub fn new<'a>(urls: impl IntoIterator<Item = &'a str>) -> Ring {
        let mut points = Vec::new();
        for (i, url) in urls.into_iter().enumerate() {
            for v in 0..VNODES {
                let point = stable_hash(&[url.as_bytes(), b"#", &v.to_le_bytes()]);
                points.push((point, i as u32));
            }
        }
        points.sort_unstable();
        Ring {
            points: points.into_boxed_slice(),
        }
    }

    /// The owner of `key`: the first point at or after it, walking on (and wrapping) past
    /// targets that `eligible` refuses. `None` when it refuses them all.
    pub fn lookup(&self, key: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.points.len();
        let start = self.points.partition_point(|(p, _)| *p < key);
        let mut refused: Option<u32> = None;
        for k in 0..n {
            let target = self.points[(start + k) % n].1;
            // Consecutive points often belong to the target just refused: skip the re-check.
            if refused == Some(target) {
                continue;
            }
            if eligible(target as usize) {
                return Some(target as usize);
            }
            refused = Some(target);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_stable_across_builds_and_platforms() {
        // Golden values: changing them remaps every consistent_hash key in a running cluster.
        // FNV-1a's published test vector, then the finaliser over it.
        assert_eq!(fnv1a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(&[b"a"]), 0x82a2_a958_a9be_ce5b);
        assert_eq!(
            stable_hash(&[b"10.0.0.1"]),
            stable_hash(&[b"10.0.", b"0.1"])
        );
        let ring = Ring::new(["http://10.0.0.1:80", "http://10.0.0.2:80"]);
        assert_eq!(ring.points.len(), 2 * VNODES as usize);
        assert_eq!(
            ring.points[0],
            (0x0013_699e_8ee6_3cf4, 0),
            "the first point moved"
        );
    }
}
