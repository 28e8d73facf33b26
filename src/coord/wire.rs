//! The message a worker VM ships once a second to the VM that merges windows: the gate identity
//! the tallies were recorded under, then both versions' tallies as LEB128 varints with sparse
//! histogram buckets. Decoding validates every field and answers `None` to anything malformed;
//! it never panics and allocates nothing unbounded.

use crate::measure::histogram::BUCKETS;
use crate::measure::window::Tally;

/// Format tag of the message; bumped on any layout change.
const FORMAT: u8 = 2;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    /// A LEB128 value; `None` for truncated or over-long encodings (bits past 64).
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return None;
            }
            v |= bits << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
}

/// Encodes `[stable, canary]` tallies recorded under the gate `identity`.
pub fn encode(tallies: &[Tally; 2], identity: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT);
    out.extend_from_slice(&identity.to_le_bytes());
    for t in tallies {
        put_varint(&mut out, t.requests);
        put_varint(&mut out, t.errors);
        let mut previous = 0usize;
        let nonzero: Vec<(usize, u32)> = t.latency.nonzero().collect();
        put_varint(&mut out, nonzero.len() as u64);
        for (i, c) in nonzero {
            // Delta-coded indexes: sorted, so small.
            put_varint(&mut out, (i - previous) as u64);
            put_varint(&mut out, u64::from(c));
            previous = i;
        }
    }
    out
}

/// Decodes a message made by [`encode`] into `into` (which it clears first) and answers the
/// identity it was recorded under; `None`, leaving `into` cleared, if the bytes are not a
/// valid message.
pub fn decode_into(bytes: &[u8], into: &mut [Tally; 2]) -> Option<u64> {
    for t in into.iter_mut() {
        t.clear();
    }
    let identity = decode(bytes, into);
    if identity.is_none() {
        for t in into.iter_mut() {
            t.clear();
        }
    }
    identity
}

fn decode(bytes: &[u8], into: &mut [Tally; 2]) -> Option<u64> {
    let (&FORMAT, rest) = bytes.split_first()? else { return None };
    let (identity, rest) = rest.split_first_chunk::<8>()?;
    let mut r = Reader { bytes: rest };
    for t in into.iter_mut() {
        let requests = r.varint()?;
        let errors = r.varint()?;
        let entries = usize::try_from(r.varint()?).ok().filter(|&n| n <= BUCKETS)?;
        let mut index = 0usize;
        let mut latency_total = 0u64;
        for k in 0..entries {
            let delta = usize::try_from(r.varint()?).ok()?;
            if k > 0 && delta == 0 {
                return None;
            }
            index = index.checked_add(delta).filter(|&i| i < BUCKETS)?;
            let count = u32::try_from(r.varint()?).ok().filter(|&c| c > 0)?;
            t.latency.add(index, count);
            latency_total += u64::from(count);
        }
        if errors > requests || latency_total != requests {
            return None;
        }
        t.requests = requests;
        t.errors = errors;
    }
    r.bytes.is_empty().then_some(u64::from_le_bytes(*identity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn sample() -> [Tally; 2] {
        let mut t: [Tally; 2] = Default::default();
        for i in 0..1_000u64 {
            t[(i % 2) as usize].record(i * 1_009 % 3_000_000, i % 7 == 0);
        }
        t
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn varints_cover_u64_and_refuse_overlong_encodings() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(Reader { bytes: &out }.varint(), Some(v));
        }
        let overlong = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(Reader { bytes: &overlong }.varint(), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn round_trips() {
        let t = sample();
        let mut back: [Tally; 2] = Default::default();
        assert_eq!(decode_into(&encode(&t, 7), &mut back), Some(7));
        assert_eq!(back, t);
        let empty: [Tally; 2] = Default::default();
        assert_eq!(decode_into(&encode(&empty, u64::MAX), &mut back), Some(u64::MAX));
        assert_eq!(back, empty);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn rejects_every_truncation_and_corruption() {
        let bytes = encode(&sample(), 3);
        let mut back: [Tally; 2] = Default::default();
        for len in 0..bytes.len() {
            assert_eq!(decode_into(&bytes[..len], &mut back), None, "truncated at {len}");
            assert_eq!(back, <[Tally; 2]>::default());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_into(&longer, &mut back), None);
        let mut foreign = bytes.clone();
        foreign[0] = FORMAT - 1;
        assert_eq!(decode_into(&foreign, &mut back), None, "another format");
        let message = |body: &[u8]| [&[FORMAT][..], &[0; 8], body].concat();
        for bad in [&[][..], &[1, 2, 0, 0, 0, 0], &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]] {
            assert_eq!(decode_into(&message(bad), &mut back), None, "{bad:?}");
        }
        // errors > requests; bucket index out of range; counts not matching requests.
        assert_eq!(decode_into(&message(&[1, 2, 1, 0, 1, 0, 0, 0]), &mut back), None);
        let mut out = Vec::new();
        for v in [1u64, 0, 1, BUCKETS as u64, 1, 0, 0, 0] {
            put_varint(&mut out, v);
        }
        assert_eq!(decode_into(&message(&out), &mut back), None);
        assert_eq!(decode_into(&message(&[2, 0, 1, 0, 1, 0, 0, 0]), &mut back), None);
        assert_eq!(decode_into(&message(&[1, 0, 1, 0, 1, 0, 0, 0]), &mut back), Some(0), "the valid twin");
    }
}
