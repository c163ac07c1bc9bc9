use protocol::frame::{HEADER_LEN, Header};
use std::io::{self, BufReader, IoSlice, Read, Write};
use zerocopy::IntoBytes;

/// A whole frame as read: header, argument bytes, bulk bytes.
pub struct Frame {
    pub header: Header,
    pub args: Vec<u8>,
    pub bulk: Vec<u8>,
}

/// Write header, arguments and any number of bulk slices, without copying them together.
pub fn write_frame(w: &mut impl Write, header: &Header, args: &[u8], bulk: &[&[u8]]) -> io::Result<()> {
    write_frame_after(w, &[], header, args, bulk)
}

/// [`write_frame`], with bytes `before` it (whole frames queued earlier) in the same write.
pub fn write_frame_after(
    w: &mut impl Write,
    before: &[Vec<u8>],
    header: &Header,
    args: &[u8],
    bulk: &[&[u8]],
) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(before.len() + 2 + bulk.len());
    slices.extend(before.iter().filter(|b| !b.is_empty()).map(|b| IoSlice::new(b)));
    slices.push(IoSlice::new(header.as_bytes()));
    if !args.is_empty() {
        slices.push(IoSlice::new(args));
    }
    for b in bulk {
        if !b.is_empty() {
            slices.push(IoSlice::new(b));
        }
    }
    write_all_vectored(w, &mut slices)
}

fn write_all_vectored(w: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Read and check one header.
pub fn read_header(r: &mut impl Read) -> io::Result<Header> {
    let mut buf = [0u8; HEADER_LEN];
    r.read_exact(&mut buf)?;
    Header::decode(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// Read one whole frame, reusing the caller's buffers.
pub fn read_frame(r: &mut impl Read, args: &mut Vec<u8>, bulk: &mut Vec<u8>) -> io::Result<Header> {
    let h = read_header(r)?;
    read_exact_into(r, args, h.args_len as usize)?;
    read_exact_into(r, bulk, h.bulk_len as usize)?;
    Ok(h)
}

/// Fill `v` with exactly `len` bytes from `r`, growing it only as data arrives so that a
/// lying length field cannot make us allocate memory the peer never sends: each step at
/// most doubles what has arrived (from 64 KiB, up to 64 MiB a step).
pub fn read_exact_into(r: &mut impl Read, v: &mut Vec<u8>, len: usize) -> io::Result<()> {
    v.clear();
    const FIRST: usize = 64 << 10;
    const STEP: usize = 64 << 20;
    while v.len() < len {
        let start = v.len();
        let want = (len - start).min(start.clamp(FIRST, STEP));
        v.resize(start + want, 0);
        r.read_exact(&mut v[start..])?;
    }
    Ok(())
}

/// Reads from a `BufReader` that bypass its buffer once it is empty. A `BufReader` copies
/// any read smaller than its capacity through its buffer: for bulk bytes (a megabyte copy
/// frame) that is a second copy of every byte. Small reads should go through the buffer.
pub struct Unbuffered<'a, R>(pub &'a mut BufReader<R>);

impl<R: Read> Read for Unbuffered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.buffer().is_empty() { self.0.get_mut().read(buf) } else { self.0.read(buf) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_roundtrip() {
        let h = Header::request(3, 1, 0, false, 3, 5);
        let mut wire = Vec::new();
        write_frame(&mut wire, &h, b"abc", &[b"de", b"fgh"]).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let got = read_frame(&mut wire.as_slice(), &mut a, &mut b).unwrap();
        assert_eq!(got, h);
        assert_eq!(a, b"abc");
        assert_eq!(b, b"defgh");
    }

    /// Frames queued before a request go out ahead of it, in their order, in the one write.
    #[test]
    fn queued_frames_precede_the_request() {
        let mut queued = Vec::new();
        for seq in 1..=2 {
            let mut f = Vec::new();
            write_frame(&mut f, &Header::request(7, seq, 0, true, 1, 0), &[seq as u8], &[]).unwrap();
            queued.push(f);
        }
        queued.push(Vec::new()); // an empty buffer adds nothing
        let mut wire = Vec::new();
        write_frame_after(&mut wire, &queued, &Header::request(9, 3, 0, false, 2, 1), b"xy", &[b"z"]).unwrap();
        let mut r = wire.as_slice();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (seq, args) in [(1, &b"\x01"[..]), (2, b"\x02"), (3, b"xy")] {
            assert_eq!(read_frame(&mut r, &mut a, &mut b).unwrap().seq, seq);
            assert_eq!(a, args);
        }
        assert_eq!(b, b"z");
        assert!(r.is_empty());
    }

    #[test]
    fn lying_length_allocates_little() {
        // A header may claim a gigabyte; only what arrives is buffered (about twice it).
        let mut v = Vec::new();
        assert!(read_exact_into(&mut &[7u8; 100_000][..], &mut v, 1 << 30).is_err());
        assert!(v.capacity() < 1 << 20, "{}", v.capacity());
        read_exact_into(&mut &[7u8; 300_000][..], &mut v, 300_000).unwrap();
        assert_eq!(v, vec![7u8; 300_000]);
    }

    #[test]
    fn unbuffered_reads_take_the_buffered_bytes_first() {
        // A reader that counts how many bytes were asked of it at once.
        struct Counting<'a>(&'a [u8], usize);
        impl Read for Counting<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.1 = self.1.max(buf.len());
                self.0.read(buf)
            }
        }
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut r = BufReader::with_capacity(1000, Counting(&data, 0));
        let mut head = [0u8; 10];
        r.read_exact(&mut head).unwrap();
        let mut rest = vec![0u8; data.len() - 10];
        Unbuffered(&mut r).read_exact(&mut rest).unwrap();
        assert_eq!(&head[..], &data[..10]);
        assert_eq!(rest, &data[10..]);
        assert!(r.get_ref().1 > 1000, "the bulk went past the buffer, in reads larger than it");
    }

    #[test]
    fn truncated_frame_is_an_error() {
        let h = Header::request(3, 1, 0, false, 3, 100);
        let mut wire = Vec::new();
        write_frame(&mut wire, &h, b"abc", &[b"only a little"]).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert!(read_frame(&mut wire.as_slice(), &mut a, &mut b).is_err());
    }
}
