//! MD5 of many messages at once: four or eight digests computed in lock-step, one per lane.
//!
//! One MD5 is a chain of 64 dependent steps per 64-byte block, so a single digest leaves most
//! of a core idle, waiting on that chain. Here each of the four state words is a vector with one
//! lane per message, and every step does the same thing to every lane: one 128-bit instruction
//! per operation for four lanes (SSE2 on x86-64, NEON on aarch64, through the `wide` crate's safe
//! types; baseline features, so no run-time CPU detection). Eight lanes are two such vectors,
//! whose dependency chains overlap. Per block that is about a third of the cost of the scalar
//! (assembly) `md-5`, and a quarter for one-block messages such as partition keys (criterion,
//! `benches/codec.rs`).
//!
//! Lanes work from a queue: a lane that finishes its message writes the digest and takes the
//! next one, so messages of different lengths keep every lane busy until the queue runs dry.
//! A single message goes to the scalar `md-5` crate, which is faster for one.

use md5::{Digest, Md5};
use wide::u32x4;

const BLOCK: usize = 64;
/// Lanes per vector.
const WIDTH: usize = 4;
/// What idle lanes compress.
static ZEROS: [u8; BLOCK] = [0; BLOCK];

/// Per-step left rotations.
const S: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, //
    5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, //
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, //
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
];

/// Per-step additive constants: the integer part of 2^32 × |sin(i + 1)| (RFC 1321).
const K: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

/// The initial state (A, B, C, D).
const IV: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The MD5 digest of each message, in order.
pub(crate) fn digest_each(messages: &[&[u8]]) -> Vec<[u8; 16]> {
    match messages.len() {
        0 | 1 => messages.iter().map(|m| Md5::digest(m).into()).collect(),
        2..=WIDTH => digest_in_lanes::<1>(messages),
        _ => digest_in_lanes::<2>(messages),
    }
}

/// Digests with `G` vectors of lanes.
fn digest_in_lanes<const G: usize>(messages: &[&[u8]]) -> Vec<[u8; 16]> {
    let mut out = vec![[0u8; 16]; messages.len()];
    let mut queue = messages.iter().enumerate();
    let mut lanes: [[Option<Lane<'_>>; WIDTH]; G] = std::array::from_fn(|_| {
        std::array::from_fn(|_| queue.next().map(|(i, m)| Lane::new(i, m)))
    });
    let mut state: [[u32x4; G]; 4] = IV.map(|word| [u32x4::splat(word); G]);
    let mut padding = [[[0u8; BLOCK]; WIDTH]; G];
    loop {
        if lanes.iter().flatten().all(Option::is_none) {
            return out;
        }
        let mut words = [[u32x4::splat(0); G]; 16];
        for (g, (group, pads)) in lanes.iter().zip(&mut padding).enumerate() {
            let mut blocks = [&ZEROS; WIDTH];
            for ((block, lane), pad) in blocks.iter_mut().zip(group).zip(pads) {
                if let Some(lane) = lane {
                    *block = lane.next_block(pad);
                }
            }
            transpose(blocks, &mut words, g);
        }
        compress(&mut state, &words);
        for (g, group) in lanes.iter_mut().enumerate() {
            let words = state.map(|word| word[g].to_array());
            let mut finished = [0u32; WIDTH];
            for ((l, slot), finished) in group.iter_mut().enumerate().zip(&mut finished) {
                let Some(lane) = slot else { continue };
                lane.next += 1;
                if lane.next < lane.blocks {
                    continue;
                }
                let digest = &mut out[lane.index];
                for (j, word) in words.iter().enumerate() {
                    digest[4 * j..4 * j + 4].copy_from_slice(&word[l].to_le_bytes());
                }
                *finished = u32::MAX;
                *slot = queue.next().map(|(i, m)| Lane::new(i, m));
            }
            if finished != [0; WIDTH] {
                // Finished lanes start the next message afresh (changed all at once: a lane
                // written alone goes through memory, slowly).
                let mask = u32x4::new(finished);
                for (word, iv) in state.iter_mut().zip(IV) {
                    word[g] = (word[g] & !mask) | (u32x4::splat(iv) & mask);
                }
            }
        }
    }
}

/// Puts four blocks' words into vector `g` of `words`, word-major (word `w` of block `l` in
/// lane `l` of vector `w`): each block is read 16 bytes at a time and every 4 × 4 square of
/// words is transposed in registers.
#[inline(always)]
fn transpose<const G: usize>(
    blocks: [&[u8; BLOCK]; WIDTH],
    words: &mut [[u32x4; G]; 16],
    g: usize,
) {
    let row = |block: &[u8; BLOCK], r: usize| {
        u32x4::new(std::array::from_fn(|i| {
            let at = 16 * r + 4 * i;
            u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]])
        }))
    };
    for r in 0..4 {
        let [w0, w1, w2, w3] = u32x4::transpose(blocks.map(|block| row(block, r)));
        words[4 * r][g] = w0;
        words[4 * r + 1][g] = w1;
        words[4 * r + 2][g] = w2;
        words[4 * r + 3][g] = w3;
    }
}

/// One message in progress in a lane.
struct Lane<'a> {
    /// Its position in the input (and output).
    index: usize,
    message: &'a [u8],
    /// Blocks in all: the whole blocks of the message, then one or two of padding (the rest of
    /// the message, the 0x80 marker, zeros, and the length in bits).
    blocks: usize,
    /// The next block to compress.
    next: usize,
}

impl<'a> Lane<'a> {
    fn new(index: usize, message: &'a [u8]) -> Self {
        // The length needs 8 bytes after the marker within the last block.
        let blocks = (message.len() + 1 + 8).div_ceil(BLOCK);
        Lane {
            index,
            message,
            blocks,
            next: 0,
        }
    }

    /// The next block: a whole block of the message, or one of padding written into `pad`.
    fn next_block<'p>(&self, pad: &'p mut [u8; BLOCK]) -> &'p [u8; BLOCK]
    where
        'a: 'p,
    {
        let start = self.next * BLOCK;
        if let Some(whole) = self.message.get(start..start + BLOCK)
            && let Ok(whole) = whole.try_into()
        {
            return whole;
        }
        let rest = self.message.get(start..).unwrap_or_default();
        *pad = [0; BLOCK];
        pad[..rest.len()].copy_from_slice(rest);
        if start <= self.message.len() {
            pad[rest.len()] = 0x80;
        }
        if self.next + 1 == self.blocks {
            let bits = (self.message.len() as u64).wrapping_mul(8);
            pad[BLOCK - 8..].copy_from_slice(&bits.to_le_bytes());
        }
        pad
    }
}

/// The MD5 block function on every lane of `G` vectors.
///
/// Out of line and unrolled by a macro: every step's rotation and message word is a constant.
#[inline(never)]
fn compress<const G: usize>(state: &mut [[u32x4; G]; 4], m: &[[u32x4; G]; 16]) {
    let [mut a, mut b, mut c, mut d] = *state;
    macro_rules! step {
        ($i:expr) => {{
            const I: usize = $i;
            // This step's message word.
            const W: usize = match I / 16 {
                0 => I,
                1 => (5 * I + 1) % 16,
                2 => (3 * I + 5) % 16,
                _ => (7 * I) % 16,
            };
            let k = u32x4::splat(K[I]);
            let mut next = b;
            for v in 0..G {
                let (a, b, c, d) = (a[v], b[v], c[v], d[v]);
                let f = match I / 16 {
                    0 => (b & c) | (!b & d),
                    1 => (d & b) | (!d & c),
                    2 => b ^ c ^ d,
                    _ => c ^ (b | !d),
                };
                // `a + K + m` does not wait on this step's `f`: added first, it leaves the chain.
                let sum = a + k + m[W][v] + f;
                next[v] = b + ((sum << S[I]) | (sum >> (32 - S[I])));
            }
            a = d;
            d = c;
            c = b;
            b = next;
        }};
    }
    macro_rules! sixteen {
        ($o:expr) => {
            step!($o);
            step!($o + 1);
            step!($o + 2);
            step!($o + 3);
            step!($o + 4);
            step!($o + 5);
            step!($o + 6);
            step!($o + 7);
            step!($o + 8);
            step!($o + 9);
            step!($o + 10);
            step!($o + 11);
            step!($o + 12);
            step!($o + 13);
            step!($o + 14);
            step!($o + 15);
        };
    }
    sixteen!(0);
    sixteen!(16);
    sixteen!(32);
    sixteen!(48);
    for (word, new) in state.iter_mut().zip([a, b, c, d]) {
        for (v, n) in word.iter_mut().zip(new) {
            *v += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scalar(messages: &[Vec<u8>]) -> Vec<[u8; 16]> {
        messages.iter().map(|m| Md5::digest(m).into()).collect()
    }

    #[test]
    fn known_digests() {
        // RFC 1321 test suite.
        let cases: [(&[u8], &str); 4] = [
            (b"", "d41d8cd98f00b204e9800998ecf8427e"),
            (b"abc", "900150983cd24fb0d6963f7d28e17f72"),
            (b"message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        let messages: Vec<&[u8]> = cases.iter().map(|(m, _)| *m).collect();
        let hex = |d: &[u8; 16]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let got: Vec<String> = digest_each(&messages).iter().map(hex).collect();
        let want: Vec<&str> = cases.iter().map(|(_, h)| *h).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn every_length_around_the_block_edges() {
        // Lengths 0..=200 cover one- and two-block tails at every offset, in lanes that finish
        // at different rounds and take new messages.
        let messages: Vec<Vec<u8>> = (0..=200u8)
            .map(|n| (0..n).map(|i| i.wrapping_mul(31) ^ n).collect())
            .collect();
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        assert_eq!(digest_each(&refs), scalar(&messages));
    }

    proptest! {
        #[test]
        fn matches_scalar_md5(messages in prop::collection::vec(
            prop::collection::vec(any::<u8>(), 0..600), 0..12)
        ) {
            let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(digest_each(&refs), scalar(&messages));
        }
    }
}
