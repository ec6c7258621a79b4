//! Byte-pair merging of one pre-tokenized piece, shared by the tiktoken and GGUF kinds.
//!
//! The rule is the one of tiktoken's `_byte_pair_merge` (openai/tiktoken `src/lib.rs`), of
//! Hugging Face `tokenizers`' `BPE::merge_word` and of llama.cpp's `llm_tokenizer_bpe_session`:
//! start from one part per byte and repeatedly merge the adjacent pair with the lowest rank,
//! the leftmost one on a tie, until no adjacent pair has a rank. Only what a "rank" is differs:
//! tiktoken ranks the concatenated bytes (`ranks[piece[l.start..r.end]]`), GPT-2-style BPE
//! ranks the pair of token ids by its line in the merges list. [`PairRank`] abstracts that.
//!
//! Two implementations of the same rule: [`merge_linear`] rescans the part list for the
//! minimum after every merge (tiktoken's loop; fastest for the short pieces that are almost all
//! of real text), and [`merge_heap`] keeps the candidate pairs in a binary heap over a linked
//! list (O(n log n); used for long pieces, e.g. a 25 000-letter "word", where the rescan would
//! be quadratic). A unit test checks that they agree.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Pieces at most this long use the rescanning merge, longer ones the heap.
pub(crate) const LINEAR_MAX: usize = 96;

/// One part of a piece: the byte range `start..end` and the token id it currently spells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Part {
    pub start: u32,
    pub end: u32,
    pub id: u32,
}

/// How a model ranks merges.
pub(crate) trait PairRank {
    /// The token id of the single byte `b` (every byte must have one).
    fn byte_id(&self, b: u8) -> u32;
    /// `Some((rank, merged_id))` when `left` and `right` (adjacent parts of `piece`) merge.
    fn pair(&self, piece: &[u8], left: Part, right: Part) -> Option<(u32, u32)>;
}

const NONE: u32 = u32::MAX;

/// Merges `piece` (non-empty) and appends the resulting ids to `out`.
pub(crate) fn merge<R: PairRank>(model: &R, piece: &[u8], out: &mut Vec<u32>) {
    if piece.len() <= LINEAR_MAX {
        merge_linear(model, piece, out)
    } else {
        merge_heap(model, piece, out)
    }
}

/// tiktoken's loop: parts in a vector, each with the rank of merging it with its right
/// neighbour; find the minimum, merge, update the two neighbours' ranks.
pub(crate) fn merge_linear<R: PairRank>(model: &R, piece: &[u8], out: &mut Vec<u32>) {
    // (part, rank with the next part, merged id with the next part)
    let mut parts: Vec<(Part, u32, u32)> = Vec::with_capacity(piece.len());
    for (i, &b) in piece.iter().enumerate() {
        let p = Part { start: i as u32, end: i as u32 + 1, id: model.byte_id(b) };
        parts.push((p, NONE, NONE));
    }
    let rank_at = |parts: &[(Part, u32, u32)], i: usize| -> (u32, u32) {
        match parts.get(i + 1) {
            Some(next) => model.pair(piece, parts[i].0, next.0).unwrap_or((NONE, NONE)),
            None => (NONE, NONE),
        }
    };
    for i in 0..parts.len() {
        let (r, id) = rank_at(&parts, i);
        parts[i].1 = r;
        parts[i].2 = id;
    }
    loop {
        let mut best = (NONE, 0usize);
        for (i, p) in parts.iter().enumerate() {
            if p.1 < best.0 {
                best = (p.1, i);
            }
        }
        if best.0 == NONE {
            break;
        }
        let i = best.1;
        let merged_id = parts[i].2;
        parts[i].0.end = parts[i + 1].0.end;
        parts[i].0.id = merged_id;
        parts.remove(i + 1);
        let (r, id) = rank_at(&parts, i);
        parts[i].1 = r;
        parts[i].2 = id;
        if i > 0 {
            let (r, id) = rank_at(&parts, i - 1);
            parts[i - 1].1 = r;
            parts[i - 1].2 = id;
        }
    }
    out.extend(parts.iter().map(|p| p.0.id));
}

/// The same rule with a min-heap of `(rank, start)` over a doubly linked list of parts.
/// Entries are not removed when a merge makes them stale; a popped entry is used only if the
/// pair at its position still has the popped rank (every live pair always has an up-to-date
/// entry, so the first valid pop is the leftmost lowest-ranked pair).
pub(crate) fn merge_heap<R: PairRank>(model: &R, piece: &[u8], out: &mut Vec<u32>) {
    let n = piece.len();
    let mut parts: Vec<Part> = piece
        .iter()
        .enumerate()
        .map(|(i, &b)| Part { start: i as u32, end: i as u32 + 1, id: model.byte_id(b) })
        .collect();
    // Linked list by index; a part's index is its start byte, which never changes.
    let mut next: Vec<u32> = (1..=n as u32).collect();
    let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
    let mut alive = vec![true; n];
    let mut heap: BinaryHeap<Reverse<(u32, u32)>> = BinaryHeap::with_capacity(n);
    let pair_at = |parts: &[Part], next: &[u32], i: usize| -> Option<(u32, u32)> {
        let j = next[i] as usize;
        if j >= n {
            return None;
        }
        model.pair(piece, parts[i], parts[j])
    };
    for i in 0..n {
        if let Some((r, _)) = pair_at(&parts, &next, i) {
            heap.push(Reverse((r, i as u32)));
        }
    }
    while let Some(Reverse((rank, i))) = heap.pop() {
        let i = i as usize;
        if !alive[i] {
            continue;
        }
        let Some((r, merged_id)) = pair_at(&parts, &next, i) else { continue };
        if r != rank {
            continue;
        }
        let j = next[i] as usize;
        parts[i].end = parts[j].end;
        parts[i].id = merged_id;
        alive[j] = false;
        next[i] = next[j];
        if (next[j] as usize) < n {
            prev[next[j] as usize] = i as u32;
        }
        if let Some((r, _)) = pair_at(&parts, &next, i) {
            heap.push(Reverse((r, i as u32)));
        }
        let p = prev[i] as usize;
        if p < n {
            if let Some((r, _)) = pair_at(&parts, &next, p) {
                heap.push(Reverse((r, p as u32)));
            }
        }
    }
    let mut i = 0usize;
    while i < n {
        out.push(parts[i].id);
        i = next[i] as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustc_hash::FxHashMap;

    /// A toy tiktoken-style model: ranks of byte strings.
    struct Toy(FxHashMap<Vec<u8>, u32>);

    impl PairRank for Toy {
        fn byte_id(&self, b: u8) -> u32 {
            self.0[&vec![b]]
        }
        fn pair(&self, piece: &[u8], l: Part, r: Part) -> Option<(u32, u32)> {
            self.0.get(&piece[l.start as usize..r.end as usize]).map(|&x| (x, x))
        }
    }

    fn toy() -> Toy {
        let mut m = FxHashMap::default();
        for b in 0..=255u8 {
            m.insert(vec![b], b as u32);
        }
        let mut next = 256;
        for t in ["ab", "bc", "abc", "cd", "abcd", "aa", "aaaa", "ba", "dab", "bcd", "aab"] {
            m.insert(t.as_bytes().to_vec(), next);
            next += 1;
        }
        Toy(m)
    }

    #[test]
    fn linear_and_heap_agree() {
        let model = toy();
        let mut seed = 0x9e3779b97f4a7c15u64;
        for len in 1..300 {
            let piece: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    b"abcd"[(seed % 4) as usize]
                })
                .collect();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            merge_linear(&model, &piece, &mut a);
            merge_heap(&model, &piece, &mut b);
            assert_eq!(a, b, "piece {:?}", String::from_utf8_lossy(&piece));
        }
    }

    #[test]
    fn merges_lowest_rank_leftmost() {
        let model = toy();
        let mut out = Vec::new();
        merge_linear(&model, b"abcd", &mut out);
        // "ab" (256) before "bc" (257); then "abc"; then "abcd".
        assert_eq!(out, vec![model.0[&b"abcd".to_vec()]]);
        out.clear();
        merge_heap(&model, b"aaaaa", &mut out);
        assert_eq!(out, vec![model.0[&b"aaaa".to_vec()], b'a' as u32]);
    }
}
