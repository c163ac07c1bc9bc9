//! Host-to-device copies whose repeated pieces the server keeps (`htod_pages`).
//!
//! The case is a prompt batch's input embeddings: llama.cpp looks the batch's tokens up in
//! the token table on the CPU and copies the rows (4 MiB for 512 tokens of a 2048-wide
//! model) to the GPU with every batch. Across hosts those bytes cost the link, yet text
//! repeats its tokens, so most rows were sent before. The copy is cut into pieces counted
//! from its start (a row is a whole number of pieces for the usual widths), and each piece
//! is either sent or named by the slot of the session's page store that holds it.
//!
//! The client owns the slots: it decides what is kept where and what is evicted, so a copy
//! costs no round trip; the server keeps what it is told, in frame order. Within one frame
//! a slot is kept at most once, and not named as kept before it is kept there, so the
//! server may fill the pieces in any order once the frame's new pieces are in place.

use crate::Piece;

/// The piece sizes a store may have: powers of two in this range.
pub const PIECE_MIN: u32 = 256;
pub const PIECE_MAX: u32 = 64 << 10;

/// Whether `piece` is a size a store may have.
pub fn valid_piece(piece: u32) -> bool {
    (PIECE_MIN..=PIECE_MAX).contains(&piece) && piece.is_power_of_two()
}

/// Why a copy's pieces do not describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Bad {
    #[error("the number of pieces does not match the copy's length")]
    Count,
    #[error("a slot past the store")]
    Slot,
    #[error("a shorter last piece named as kept")]
    Short,
    #[error("a slot kept twice in one copy, or named before it is kept")]
    Order,
    #[error("the sent bytes do not match the pieces sent")]
    Bulk,
}

/// Checks that `pieces` describe a `len`-byte copy in pieces of `piece` bytes, over a store
/// of `slots` slots, with `bulk` bytes sent; answers where each sent piece starts in the
/// bulk (`None` for a kept one).
pub fn check(pieces: &[Piece], len: usize, piece: usize, slots: u32, bulk: usize) -> Result<Vec<Option<usize>>, Bad> {
    if piece == 0 || pieces.len() != len.div_ceil(piece) {
        return Err(Bad::Count);
    }
    let short = !len.is_multiple_of(piece);
    let mut at = 0usize;
    let mut starts = Vec::with_capacity(pieces.len());
    // Each slot a piece names, with the piece's place and whether it keeps: sorted by slot
    // then place, for the order rule (a sort of a few thousand words, faster than a set).
    let mut named: Vec<u64> = Vec::with_capacity(pieces.len());
    for (i, p) in pieces.iter().enumerate() {
        let size = piece.min(len - i * piece);
        if let Piece::Keep(s) | Piece::Kept(s) = *p {
            if s >= slots {
                return Err(Bad::Slot);
            }
            if short && i + 1 == pieces.len() {
                return Err(Bad::Short);
            }
            named.push(u64::from(s) << 32 | (i as u64) << 1 | u64::from(matches!(p, Piece::Keep(_))));
        }
        if let Piece::Kept(_) = p {
            starts.push(None);
        } else {
            starts.push(Some(at));
            at += size;
        }
    }
    if at != bulk {
        return Err(Bad::Bulk);
    }
    named.sort_unstable();
    for same in named.chunk_by(|a, b| a >> 32 == b >> 32) {
        let keeps = same.iter().filter(|&&m| m & 1 == 1).count();
        // Kept at most once, and first of the pieces naming the slot.
        if keeps > 1 || (keeps == 1 && same[0] & 1 == 0) {
            return Err(Bad::Order);
        }
    }
    Ok(starts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Piece::*;

    #[test]
    fn sizes_are_powers_of_two_in_range() {
        assert!(valid_piece(1024) && valid_piece(PIECE_MIN) && valid_piece(PIECE_MAX));
        assert!(!valid_piece(1000) && !valid_piece(128) && !valid_piece(128 << 10) && !valid_piece(0));
    }

    #[test]
    fn sent_pieces_start_where_the_ones_before_them_end() {
        let starts = check(&[Sent, Kept(3), Keep(1), Sent], 3 * 1024 + 10, 1024, 4, 2048 + 10).unwrap();
        assert_eq!(starts, vec![Some(0), None, Some(1024), Some(2048)]);
    }

    #[test]
    fn pieces_that_do_not_describe_the_copy_are_refused() {
        assert_eq!(check(&[Sent], 2048, 1024, 4, 1024), Err(Bad::Count));
        assert_eq!(check(&[Sent, Sent], 2048, 1024, 4, 1024), Err(Bad::Bulk));
        assert_eq!(check(&[Keep(4), Sent], 2048, 1024, 4, 2048), Err(Bad::Slot));
        assert_eq!(check(&[Kept(9), Sent], 2048, 1024, 4, 1024), Err(Bad::Slot));
        assert_eq!(check(&[Sent, Kept(0)], 1500, 1024, 4, 1024), Err(Bad::Short));
        assert_eq!(check(&[Sent, Keep(0)], 1500, 1024, 4, 1500), Err(Bad::Short));
        assert_eq!(check(&[Sent], 10, 0, 4, 10), Err(Bad::Count));
    }

    #[test]
    fn a_slot_is_kept_once_a_copy_and_named_only_after() {
        assert_eq!(check(&[Keep(1), Keep(1)], 2048, 1024, 4, 2048), Err(Bad::Order));
        assert_eq!(check(&[Kept(1), Keep(1)], 2048, 1024, 4, 1024), Err(Bad::Order));
        assert!(check(&[Keep(1), Kept(1), Kept(1)], 3072, 1024, 4, 1024).is_ok());
        assert!(check(&[Kept(2), Keep(1), Kept(2)], 3072, 1024, 4, 1024).is_ok());
    }
}
