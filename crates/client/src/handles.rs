//! Handle values when a process talks to several servers.
//!
//! Every server issues its own handles (contexts, streams, events, modules, functions,
//! graphs, VMM allocation handles, cuBLAS handles) as `u64`s, and two servers can issue the
//! same value: two sim servers count from the same start, and two workers of the same
//! binary on one host can get the same driver pointers. So with more than one server the
//! client *tags* every handle it hands to the application with the index of the server
//! that issued it, in bits 48..64, and strips the tag before the value goes back to that
//! server. The tag routes a call: a stream, event or function names its server, whatever
//! context is current.
//!
//! Server handles are user-space pointers or small counters, below 2^48 on every platform
//! CUDA runs on (x86-64 and aarch64 user address spaces are 47 or 48 bits); a value with
//! any of bits 48..64 set cannot be tagged and the call that produced it fails (this is
//! checked, never assumed). With a single server nothing is tagged: values pass through
//! unchanged, exactly as before.
//!
//! Device pointers are *not* tagged: kernels dereference them and applications do
//! arithmetic on them. They are routed by the address ranges the client remembers for its
//! allocations instead, and the client keeps those ranges disjoint across servers (see the
//! CUDA shim's `route` module).

/// Bits of a client handle that hold the server index.
pub const SHIFT: u32 = 48;
/// The largest raw handle a server may issue when there are several servers.
pub const RAW_MASK: u64 = (1 << SHIFT) - 1;

/// The client value for `raw` from `server`, among `servers` servers; `None` if `raw`
/// cannot carry a tag (it uses bits 48..64) or `server` is not one of them.
pub fn tag(servers: usize, server: usize, raw: u64) -> Option<u64> {
    if servers <= 1 {
        return (server == 0).then_some(raw);
    }
    if server >= servers || raw & !RAW_MASK != 0 {
        return None;
    }
    Some(raw | (server as u64) << SHIFT)
}

/// The server that issued client value `h`, and the server's own value; `None` for a tag
/// that names no server. With one server every value is its own (untagged).
pub fn untag(servers: usize, h: u64) -> Option<(usize, u64)> {
    if servers <= 1 {
        return Some((0, h));
    }
    let server = (h >> SHIFT) as usize;
    (server < servers).then_some((server, h & RAW_MASK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_passes_values_through() {
        for v in [0, 1, 2, 0x1010, u64::MAX, 0x7fff_1234_5678] {
            assert_eq!(tag(1, 0, v), Some(v));
            assert_eq!(untag(1, v), Some((0, v)));
        }
        assert_eq!(tag(1, 1, 5), None);
    }

    #[test]
    fn tags_round_trip_and_keep_servers_apart() {
        let (a, b) = (tag(2, 0, 0x1010).unwrap(), tag(2, 1, 0x1010).unwrap());
        assert_ne!(a, b, "the same raw value from two servers gives two client values");
        assert_eq!(a, 0x1010, "server 0's values are unchanged");
        assert_eq!(b, 0x1_0000_0000_1010);
        assert_eq!(untag(2, a), Some((0, 0x1010)));
        assert_eq!(untag(2, b), Some((1, 0x1010)));
        // Driver pointers (47-bit user space) fit.
        let p = 0x7f3a_2c00_1230;
        assert_eq!(untag(3, tag(3, 2, p).unwrap()), Some((2, p)));
        // The special stream values stay themselves and belong to server 0.
        for s in 0..=2 {
            assert_eq!(untag(4, s), Some((0, s)));
        }
    }

    #[test]
    fn untaggable_values_and_unknown_servers_are_refused() {
        assert_eq!(tag(2, 1, 1 << 48), None);
        assert_eq!(tag(2, 0, u64::MAX), None);
        assert_eq!(tag(2, 2, 5), None);
        assert_eq!(untag(2, 2 << SHIFT | 5), None);
        assert_eq!(untag(2, u64::MAX), None);
    }
}
