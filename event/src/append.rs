//! Appending a short byte string to a buffer without a `memory.copy`.
//!
//! `Vec::extend_from_slice` with a length known only at run time becomes
//! wasm's `memory.copy`, which V8 runs as a call out of the wasm code into C
//! (a stack switch, bounds checks, `memmove`): ≈ 100 instructions whatever
//! the length. Event lines and body payloads are written from many pieces of
//! a few bytes each (names, values, `"name":value` members), so for those the
//! call is most of the copy. Up to 32 bytes, this copies with a few fixed-size
//! loads and stores (the first and last 4, 8 or 16 bytes, overlapping),
//! which compile to plain wasm loads and stores.

/// Appends `src` to `out`, as `out.extend_from_slice(src)`.
#[inline(always)]
pub fn append(out: &mut Vec<u8>, src: &[u8]) {
    let n = src.len();
    let len = out.len();
    // Without 32 bytes of room, as the buffer grows anyway: reserving more
    // than asked would change when it grows (and copies itself).
    if n > 32 || out.capacity() - len < 32 {
        out.extend_from_slice(src);
        return;
    }
    // Room for any short copy, written over below and cut back to `n`: a
    // constant-length copy of zeros, which compiles to stores.
    out.extend_from_slice(&[0u8; 32]);
    let dst = &mut out[len..len + 32];
    if n >= 16 {
        dst[..16].copy_from_slice(&src[..16]);
        dst[n - 16..n].copy_from_slice(&src[n - 16..]);
    } else if n >= 8 {
        dst[..8].copy_from_slice(&src[..8]);
        dst[n - 8..n].copy_from_slice(&src[n - 8..]);
    } else if n >= 4 {
        dst[..4].copy_from_slice(&src[..4]);
        dst[n - 4..n].copy_from_slice(&src[n - 4..]);
    } else if n > 0 {
        dst[0] = src[0];
        dst[n / 2] = src[n / 2];
        dst[n - 1] = src[n - 1];
    }
    out.truncate(len + n);
}

#[cfg(test)]
mod tests {
    use super::append;

    #[test]
    fn appends_every_length_as_extend_from_slice() {
        let src: Vec<u8> = (0..80u8)
            .map(|b| b.wrapping_mul(37).wrapping_add(1))
            .collect();
        // Spare room of 0 and 31 bytes takes `extend_from_slice`; 32 and
        // more, the short copies.
        for (prefix, room) in [0usize, 1, 7, 31]
            .into_iter()
            .flat_map(|p| [(p, 0), (p, 31), (p, 32), (p, 64)])
        {
            for n in 0..=src.len() {
                let mut ours = Vec::with_capacity(prefix + room);
                ours.resize(prefix, 0xAA);
                let mut theirs = ours.clone();
                append(&mut ours, &src[..n]);
                theirs.extend_from_slice(&src[..n]);
                assert_eq!(ours, theirs, "prefix {prefix}, length {n}");
            }
        }
    }
}
