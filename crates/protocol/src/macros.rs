//! `api!`: one declaration per forwarded call.
//!
//! From each line `sync|oneway Name(arg: Type, ...) -> Ret;` it generates
//! - `ops::Name`, the wire message (postcard-encoded arguments),
//! - `Op::Name`, its opcode, and `OP_NAMES` for logs and traces,
//! - an impl of [`crate::Call`] carrying the reply type, whether the caller waits, and the
//!   stream the call is ordered on (its argument named `stream`),
//! - a method of the server's `Backend` trait, and `dispatch`, which decodes and calls it,
//! - `WIRE_DEFINITION`, the table's text, whose hash the handshake compares.
//!
//! Bulk bytes (copy payloads, images) are not arguments: they travel raw after the
//! arguments and reach the backend through [`crate::Io`].

#[doc(hidden)]
#[macro_export]
macro_rules! __oneway {
    (sync) => {
        false
    };
    (oneway) => {
        true
    };
}

/// `Some(self.stream)` for a message with a field named `stream`, else `None`.
#[doc(hidden)]
#[macro_export]
macro_rules! __stream_of {
    ($self:ident;) => {
        None
    };
    ($self:ident; stream $($rest:ident)*) => {
        Some($self.stream)
    };
    ($self:ident; $first:ident $($rest:ident)*) => {
        $crate::__stream_of!($self; $($rest)*)
    };
}

/// `Some(self.event)` for a message with a field named `event`, else `None`.
#[doc(hidden)]
#[macro_export]
macro_rules! __event_of {
    ($self:ident;) => {
        None
    };
    ($self:ident; event $($rest:ident)*) => {
        Some($self.event)
    };
    ($self:ident; $first:ident $($rest:ident)*) => {
        $crate::__event_of!($self; $($rest)*)
    };
}

#[macro_export]
macro_rules! api {
    ( $( $(#[doc = $doc:literal])* $kind:ident $name:ident ( $( $arg:ident : $ty:ty ),* $(,)? ) -> $ret:ty ; )* ) => {
        /// Wire messages, one per forwarded call.
        #[allow(non_camel_case_types)]
        pub mod ops {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[doc = $doc])*
                #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
                pub struct $name { $( pub $arg: $ty ),* }
            )*
        }

        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u32)]
        pub enum Op { $( $name ),* }

        /// Opcode to name, for logs and `VGPU_TRACE`.
        pub const OP_NAMES: &[&str] = &[ $( stringify!($name) ),* ];

        /// The table as text; its hash is part of the handshake.
        pub const WIRE_DEFINITION: &str =
            stringify!( $( $kind $name ( $( $arg : $ty ),* ) -> $ret ; )* );

        $(
            impl $crate::Call for ops::$name {
                const OP: u32 = Op::$name as u32;
                const ONEWAY: bool = $crate::__oneway!($kind);
                type Ret = $ret;
                fn stream(&self) -> Option<u64> {
                    $crate::__stream_of!(self; $( $arg )*)
                }
                fn event(&self) -> Option<u64> {
                    $crate::__event_of!(self; $( $arg )*)
                }
            }
        )*

        /// What a server backend implements: one method per forwarded call. A backend that
        /// leaves one out answers it with [`crate::UNSUPPORTED`].
        #[allow(non_snake_case, clippy::too_many_arguments)]
        pub trait Backend {
            /// Called with the op and stream of each call (decoded, before the call runs), so
            /// that a backend can keep work it deferred in order (see the cuda backend's
            /// barriers).
            fn ordered(&mut self, op: u32, stream: Option<u64>) {
                let _ = (op, stream);
            }
            $(
                fn $name(&mut self, io: &mut $crate::Io<'_>, $( $arg: $ty ),* ) -> Result<$ret, u32> {
                    let _ = (io, $( $arg ),*);
                    Err($crate::UNSUPPORTED)
                }
            )*
        }

        /// Decode the arguments of `op`, call the backend, and encode its value.
        /// `Ok(Err(status))` is an API error; `Err` is a malformed frame.
        pub fn dispatch<B: Backend + ?Sized>(
            backend: &mut B,
            op: u32,
            args: &[u8],
            io: &mut $crate::Io<'_>,
        ) -> Result<Result<Vec<u8>, u32>, $crate::frame::FrameError> {
            $(
                if op == Op::$name as u32 {
                    let a: ops::$name = postcard::from_bytes(args).map_err(|e| {
                        $crate::frame::FrameError::Decode { op: stringify!($name), msg: e.to_string() }
                    })?;
                    backend.ordered(op, $crate::Call::stream(&a));
                    #[allow(unused_variables)]
                    let ops::$name { $( $arg ),* } = a;
                    return Ok(backend.$name(io, $( $arg ),*).map(|v| {
                        postcard::to_allocvec(&v).expect("encoding into a Vec cannot fail")
                    }));
                }
            )*
            Err($crate::frame::FrameError::UnknownOp(op))
        }

        /// Whether `op` is a one-way call (unknown opcodes are not).
        pub fn is_oneway(op: u32) -> bool {
            $( if op == Op::$name as u32 { return $crate::__oneway!($kind); } )*
            false
        }
    };
}
