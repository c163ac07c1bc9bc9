use super::client::LAG;
use super::*;
use crate::addr::Stream;
use crate::coding::Coding;
use crate::framing::{read_header, write_frame};
use protocol::frame::{FLAG_CODED, OP_JOIN};
use std::io;
use std::os::unix::net::UnixStream;
use std::time::Instant;

/// A thread that fills a buffer of `len` bytes with the bulk of frame `seq` from `set`.
pub(super) fn filling(set: &LaneSet, seq: u32, len: usize) -> std::thread::JoinHandle<io::Result<Vec<u8>>> {
    let set = set.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; len];
        set.fill(seq, &mut buf).map(|()| buf)
    })
}

/// `n` connected lanes: the client's ends (acknowledged) and the server's set.
pub(super) fn pair(n: usize) -> (Lanes, LaneSet) {
    let set = LaneSet::new();
    let mut clients = Vec::new();
    for i in 0..n {
        let (a, b) = UnixStream::pair().unwrap();
        set.add(Stream::Unix(b), i as u32).unwrap();
        let mut a = Stream::Unix(a);
        assert_eq!(read_header(&mut a).unwrap().op, OP_JOIN, "acknowledged");
        clients.push(a);
    }
    (Lanes::over(clients, Some(LAG)).unwrap(), set)
}

#[test]
fn lane_polls_follow_their_own_variable_first() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    };
    assert_eq!(lane_spin_from(&env(&[])), crate::CLIENT_SPIN);
    assert_eq!(lane_spin_from(&env(&[("VGPU_SPIN_US", "500")])), Duration::from_micros(500));
    let both = env(&[("VGPU_SPIN_US", "500"), ("VGPU_LANE_SPIN_US", "1000")]);
    assert_eq!(lane_spin_from(&both), Duration::from_micros(1000));
    assert_eq!(lane_spin_from(&env(&[("VGPU_LANE_SPIN_US", "0")])), Duration::ZERO);
    assert_eq!(lane_spin_from(&env(&[("VGPU_LANE_SPIN_US", "soon")])), crate::CLIENT_SPIN);
}

#[test]
fn striped_bulk_lands_whole_and_in_order() {
    let (lanes, set) = pair(4);
    for (seq, len) in [(1u32, 1usize), (2, 4095), (3, 1 << 20), (4, (3 << 20) + 17)] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + seq as usize) as u8).collect();
        // In two pieces, as a frame's bulk may be.
        let (a, b) = data.split_at(len / 3);
        let filler = filling(&set, seq, len);
        lanes.stripe(seq, &[a, b]).unwrap();
        assert_eq!(filler.join().unwrap().unwrap(), data, "frame {seq}");
    }
}

/// Parked on both sides (the application and the worker each in a long wait), the
/// writers and readers sleep in ticks; a copy still wakes them and lands whole, and
/// promptly (a chunk or a job wakes a ticking thread, it does not wait for the tick).
#[test]
fn parked_lanes_still_carry_a_copy() {
    let (lanes, set) = pair(4);
    let data: Vec<u8> = (0..(1usize << 20) + 5).map(|i| (i * 13) as u8).collect();
    // A first copy starts every thread's polling window.
    let filler = filling(&set, 1, data.len());
    lanes.stripe(1, &[&data]).unwrap();
    assert_eq!(filler.join().unwrap().unwrap(), data);
    // Another thread's wait does not park the writers: its copies are not this thread's.
    std::thread::scope(|s| {
        s.spawn(|| assert!(lanes.park().is_none(), "not the thread that striped"));
    });
    let (app, worker) = (lanes.park().expect("the thread that striped"), set.park());
    std::thread::sleep(crate::park::GRACE * 3);
    assert!(lanes.park.parked() && set.shared.park.parked());
    for seq in 2..5u32 {
        let filler = filling(&set, seq, data.len());
        let t = Instant::now();
        lanes.stripe(seq, &[&data]).unwrap();
        assert_eq!(filler.join().unwrap().unwrap(), data, "frame {seq}");
        assert!(t.elapsed() < Duration::from_secs(2), "a parked lane took {:?}", t.elapsed());
    }
    drop((app, worker));
    assert!(!lanes.park.parked() && !set.shared.park.parked());
}

/// Dequantized rows go coded and land exactly, in one piece or several; a client that
/// does not code sends them as they are.
#[test]
fn dequantized_rows_go_coded_and_land_exactly() {
    // Q8_0-like rows: each block of 32 values a power-of-two scale times -127..=127.
    let rows: Vec<u8> = (0..(4usize << 20) / 4)
        .flat_map(|i| {
            let q = if i % 32 == 0 { 127 } else { (i * 37 % 255) as i32 - 127 };
            (q as f32 * 2f32.powi(-(((i / 32) % 9) as i32) - 3)).to_le_bytes()
        })
        .collect();
    for code in [true, false] {
        let (mut lanes, set) = pair(4);
        lanes.code = if code { Coding::Always } else { Coding::Never };
        for (seq, bulk) in [(1u32, vec![&rows[..]]), (2, vec![&rows[..1000], &rows[1000..]])] {
            let filler = filling(&set, seq, 4 << 20);
            lanes.stripe(seq, &bulk).unwrap();
            assert!(filler.join().unwrap().unwrap() == rows, "frame {seq}, coding {code}");
        }
        let want = if code { 8 << 20 } else { 0 };
        assert_eq!(set.decoded(), want, "coding {code}");
        // Both frames' bulk in parts of 256 KiB.
        assert_eq!(lanes.coded(), if code { 32 } else { 0 });
    }
}

/// A chunk whose rows stop part way goes coded up to there and as it is from the first
/// part that does not code on.
#[test]
fn a_chunk_half_rows_lands_exactly() {
    let (mut lanes, set) = pair(1);
    lanes.code = Coding::Always;
    let mut data: Vec<u8> = (0..(512usize << 10) / 4).flat_map(|i| ((i % 255) as f32 - 127.0).to_le_bytes()).collect();
    data.extend((0..1u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    let filler = filling(&set, 1, data.len());
    lanes.stripe(1, &[&data]).unwrap();
    assert!(filler.join().unwrap().unwrap() == data);
    assert_eq!((lanes.coded(), set.decoded()), (2, 512 << 10));
}

/// A coded chunk that does not decode ends the session with a clear error.
#[test]
fn a_malformed_coded_chunk_fails_the_frame() {
    let set = LaneSet::new();
    let (a, b) = UnixStream::pair().unwrap();
    set.add(Stream::Unix(b), 0).unwrap();
    let mut a = Stream::Unix(a);
    assert_eq!(read_header(&mut a).unwrap().op, OP_JOIN);
    let mut h = Header::request(OP_LANE, 5, 0, true, 8, 3);
    h.flags |= FLAG_CODED;
    write_frame(&mut a, &h, &4096u64.to_le_bytes(), &[&[1, 2, 3]]).unwrap();
    let e = set.fill(5, &mut vec![0u8; 4096]).unwrap_err();
    assert!(e.to_string().contains("coded blocks end"), "{e}");
}

/// Small chunks that come before the worker asks for their frame are read ahead and land
/// whole once it does; a large one waits for its frame, as before.
#[test]
fn small_chunks_before_their_frame_are_read_ahead() {
    let (lanes, set) = pair(4);
    let frames: Vec<Vec<u8>> = [300usize << 10, 4096, 2 << 20]
        .iter()
        .enumerate()
        .map(|(f, &len)| (0..len).map(|i| (i * 13 + f) as u8).collect())
        .collect();
    let (sent, first_sent) = std::sync::mpsc::channel();
    let sender = {
        let frames = frames.clone();
        std::thread::spawn(move || {
            for (seq, data) in frames.iter().enumerate() {
                lanes.stripe(seq as u32 + 1, &[data]).unwrap();
                let _ = sent.send(seq);
            }
            lanes
        })
    };
    // The worker is busy elsewhere while the first frame's chunks come.
    first_sent.recv_timeout(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    for (seq, data) in frames.iter().enumerate() {
        let mut buf = vec![0u8; data.len()];
        set.fill(seq as u32 + 1, &mut buf).unwrap();
        assert!(buf == *data, "frame {}", seq + 1);
    }
    let _lanes = sender.join().unwrap();
    // The first frame's chunks, maybe the second's (whether its lane reaches that chunk's
    // header before the worker asks for the frame is a race), never the large one's.
    let ahead = set.read_ahead();
    assert!((300 << 10..=(300 << 10) + 4096).contains(&ahead), "{ahead} bytes read ahead");
}

#[test]
fn scattered_replies_are_gathered_whole() {
    let (lanes, set) = pair(4);
    for (seq, len) in [(1u32, 1usize), (2, 4097), (3, 1 << 20), (4, (5 << 20) + 3)] {
        let data: Vec<u8> = (0..len).map(|i| (i * 11 + seq as usize) as u8).collect();
        let scatter = {
            let (set, data) = (set.clone(), data.clone());
            std::thread::spawn(move || set.replies(4).unwrap().send(seq, &data))
        };
        let mut buf = vec![0u8; len];
        lanes.gather(seq, &mut buf).unwrap();
        scatter.join().unwrap().unwrap();
        assert!(buf == data, "reply {seq}");
    }
    assert_eq!(lanes.gathered(), 4);
    // Both ways at once on the same lanes.
    let data = vec![7u8; 2 << 20];
    let filler = filling(&set, 9, 2 << 20);
    let scatter = {
        let (set, data) = (set.clone(), data.clone());
        std::thread::spawn(move || set.replies(4).unwrap().send(10, &data))
    };
    lanes.stripe(9, &[&data]).unwrap();
    let mut back = vec![0u8; 2 << 20];
    lanes.gather(10, &mut back).unwrap();
    assert_eq!(filler.join().unwrap().unwrap(), data);
    scatter.join().unwrap().unwrap();
    assert_eq!(back, data);
}

#[test]
fn a_chunk_of_another_frame_fails_the_gather() {
    let (lanes, set) = pair(2);
    let scatter = {
        let set = set.clone();
        std::thread::spawn(move || set.replies(2).unwrap().send(3, &vec![1u8; 1 << 20]))
    };
    let e = lanes.gather(4, &mut vec![0u8; 1 << 20]).unwrap_err();
    assert!(e.to_string().contains("expected chunk"), "{e}");
    lanes.shutdown();
    let _ = scatter.join().unwrap();
}

#[test]
fn cut_takes_ranges_across_pieces() {
    let (a, b, c) = (&[1u8, 2, 3][..], &[][..], &[4u8, 5][..]);
    assert_eq!(cut(&[a, b, c], 1, 4).concat(), [2, 3, 4]);
    assert_eq!(cut(&[a, b, c], 0, 5).concat(), [1, 2, 3, 4, 5]);
    assert!(cut(&[a, b, c], 3, 3).is_empty());
}

/// A chunk past its frame's end or over another chunk ends the session's lanes, and
/// `fill` returns an error instead of waiting.
#[test]
fn bad_chunks_fail_the_fill() {
    for (off, len) in [(4096u64, 1usize << 20), (0, 4096)] {
        let set = LaneSet::new();
        let (a, b) = UnixStream::pair().unwrap();
        let (c, d) = UnixStream::pair().unwrap();
        set.add(Stream::Unix(b), 0).unwrap();
        set.add(Stream::Unix(d), 1).unwrap();
        let (mut a, mut c) = (Stream::Unix(a), Stream::Unix(c));
        read_header(&mut a).unwrap();
        read_header(&mut c).unwrap();
        let filler = filling(&set, 9, 1 << 20);
        let bytes = vec![1u8; len];
        write_frame(&mut a, &chunk_header(9, 0, 4096), &[], &[&bytes[..4096]]).unwrap();
        let _ = write_frame(&mut c, &chunk_header(9, off as usize, len), &[], &[&bytes]);
        let e = filler.join().unwrap().unwrap_err();
        assert!(e.to_string().contains("outside") || e.to_string().contains("overlapping"), "{e}");
    }
}

#[test]
fn fill_without_lanes_is_an_error() {
    let e = LaneSet::new().fill(1, &mut [0u8; 8]).unwrap_err();
    assert!(e.to_string().contains("no lane"), "{e}");
}

#[test]
fn a_closed_lane_fails_the_waiting_fill() {
    let (lanes, set) = pair(2);
    let filler = filling(&set, 5, 1 << 20);
    // Half a chunk, then the lanes close.
    let mut s = lanes.writers.first.lock();
    write_frame(&mut *s, &chunk_header(5, 0, 1 << 19), &[], &[&[0u8; 1000]]).unwrap();
    drop(s);
    lanes.shutdown();
    assert!(filler.join().unwrap().is_err());
}

#[test]
fn a_lane_per_two_cores_up_to_four() {
    let lanes: Vec<usize> = [1, 2, 3, 4, 6, 8, 16, 64].into_iter().map(lanes_for_cores).collect();
    assert_eq!(lanes, [1, 1, 1, 2, 3, 4, 4, 4]);
}
