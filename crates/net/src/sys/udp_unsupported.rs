//! The batched UDP socket where it is not built yet (every platform but Linux): binding fails with a
//! clear error, and the rest exists only so that the mio loop compiles unchanged.
//!
//! `ServerConfig::validate` already refuses `udp_addr` here, so nothing reaches [`BatchedUdpSocket::bind`]
//! through a server. A portable socket (plain `recv_from` / `send_to` in a loop) is issue 14's, with the
//! Windows port. Checked on Linux with `RUSTFLAGS="--cfg gamewire_udp_stub" cargo check -p gamewire-net`.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;

/// Messages per batch, as on Linux.
pub(crate) const DEFAULT_BATCH: usize = 64;

/// How a [`BatchedUdpSocket`] would be set up (see the Linux module).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct UdpSocketOptions {
    pub(crate) reuse_port: bool,
    pub(crate) receive_buffer: usize,
    pub(crate) send_buffer: usize,
    pub(crate) gro: bool,
}

/// A socket that cannot be made: no value of it exists.
#[derive(Debug)]
pub(crate) struct BatchedUdpSocket {
    never: Infallible,
}

impl BatchedUdpSocket {
    pub(crate) fn bind(_addr: SocketAddr, _options: &UdpSocketOptions) -> io::Result<BatchedUdpSocket> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the UDP transport needs Linux (recvmmsg/sendmmsg) for now",
        ))
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.never {}
    }

    pub(crate) fn source(&mut self) -> &mut mio::net::UdpSocket {
        match self.never {}
    }

    pub(crate) fn recv_batch<'buffers>(
        &mut self,
        _batch: &mut RecvBatch,
        _buffers: impl IntoIterator<Item = &'buffers mut [u8]>,
    ) -> io::Result<usize> {
        match self.never {}
    }

    pub(crate) fn send_batch(&mut self, _outgoing: &mut Outgoing<'_, '_>) -> io::Result<usize> {
        match self.never {}
    }
}

/// One received message (see the Linux module); never produced here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReceivedDatagram {
    pub(crate) source: SocketAddr,
    pub(crate) len: usize,
}

impl ReceivedDatagram {
    pub(crate) fn segments<'a>(&self, buffer: &'a [u8]) -> std::slice::Chunks<'a, u8> {
        buffer[..self.len].chunks(self.len.max(1))
    }
}

/// The receive side's buffers (see the Linux module): empty here.
#[derive(Debug, Default)]
pub(crate) struct RecvBatch {
    datagrams: Vec<ReceivedDatagram>,
}

impl RecvBatch {
    pub(crate) fn new(_capacity: usize) -> RecvBatch {
        RecvBatch::default()
    }

    pub(crate) fn capacity(&self) -> usize {
        0
    }

    pub(crate) fn datagrams(&self) -> &[ReceivedDatagram] {
        &self.datagrams
    }
}

/// Why a datagram could not join a batch (see the Linux module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {}

impl std::fmt::Display for PushError {
    fn fmt(&self, _f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

/// The send side's buffers (see the Linux module).
#[derive(Debug, Default)]
pub(crate) struct SendBatch;

impl SendBatch {
    pub(crate) fn new(_max_messages: usize, _max_iovecs: usize) -> SendBatch {
        SendBatch
    }

    pub(crate) fn begin<'data>(&mut self) -> Outgoing<'_, 'data> {
        Outgoing { _batch: std::marker::PhantomData }
    }
}

/// One batch being filled (see the Linux module).
#[derive(Debug)]
pub(crate) struct Outgoing<'batch, 'data> {
    _batch: std::marker::PhantomData<(&'batch mut SendBatch, &'data [u8])>,
}

impl<'data> Outgoing<'_, 'data> {
    pub(crate) fn push(
        &mut self,
        _destination: SocketAddr,
        _pieces: impl IntoIterator<Item = &'data [u8]>,
    ) -> Result<(), PushError> {
        Ok(())
    }

    pub(crate) fn consumed(&self) -> usize {
        0
    }

    pub(crate) fn is_done(&self) -> bool {
        true
    }
}
