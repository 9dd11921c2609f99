//! Batched UDP on Linux: one socket per worker, `recvmmsg`/`sendmmsg` over caller buffers, GRO in, GSO out.
//!
//! How the UDP loops use it:
//! - [`BatchedUdpSocket::bind`] sets the socket up (SO_REUSEPORT when asked, non-blocking, Don't
//!   Fragment, buffer sizes, UDP_GRO when asked and taken, a probe of UDP_SEGMENT) and registers
//!   with mio like any other source.
//! - On readiness, [`BatchedUdpSocket::recv_batch`] fills up to a [`RecvBatch`]'s capacity of the
//!   caller's buffers (pool chunks) in one `recvmmsg(2)`; call it until it returns `WouldBlock`. Entry
//!   `i` of [`RecvBatch::datagrams`] describes buffer `i`; [`ReceivedDatagram::segments`] splits what
//!   GRO coalesced and leaves out what was truncated.
//! - To send, [`SendBatch::begin`] returns an [`Outgoing`] list that borrows the bytes it points to:
//!   each message is one destination and the iovec of its pieces (a client's header, then shared
//!   frame slices), or several equal datagrams to one destination sent as one with UDP_SEGMENT.
//!   [`BatchedUdpSocket::send_batch`] hands them to `sendmmsg(2)`; call it until the list is done or
//!   it returns `WouldBlock`, then wait for writability. Nothing here allocates after construction.
//!
//! The socket is a `mio::net::UdpSocket` rather than a raw descriptor behind `mio::unix::SourceFd`:
//! it owns the descriptor (closed on drop), registers like the TCP listener does, and lends its raw
//! descriptor to the syscalls; `SourceFd` would leave the descriptor's lifetime to be kept by hand.
//!
//! GRO and receive buffers: the kernel coalesces a train of datagrams from one source without
//! knowing the buffer it will land in, so a buffer smaller than the train truncates it (the whole
//! segments that fit are kept, the rest is lost). Buffers of [`GRO_BUFFER_BYTES`] never truncate;
//! with smaller buffers (4 KiB pool chunks) leave GRO off.
//!
//! GSO: UDP_SEGMENT is offered when the kernel takes the option at setup, and trusted after the
//! first segmented send succeeds. If that first one fails with EIO (a device without checksum
//! offload) or EINVAL, segmented messages are from then on cut into plain datagrams by
//! [`BatchedUdpSocket::send_batch`] itself, as quinn-udp does. References: `udp(7)`,
//! `recvmmsg(2)`, `sendmmsg(2)`, and the kernel's `Documentation/networking/segmentation-offloads.rst`.

use std::io;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;

use libc::{c_int, c_uint, c_void, socklen_t};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Datagrams one `recvmmsg` or `sendmmsg` moves at most by default.
pub(crate) const DEFAULT_BATCH: usize = 64;
/// The kernel takes at most this many messages per call (UIO_MAXIOV caps `vlen`), and at most this
/// many iovecs per message.
const MAX_PER_CALL: usize = libc::UIO_MAXIOV as usize;
/// Most segments one UDP_SEGMENT send may carry: UDP_MAX_SEGMENTS in include/linux/udp.h, 64 on
/// older kernels (newer ones take 128; asking for more than an old kernel takes fails with EINVAL,
/// which would read as no GSO at all).
pub(crate) const MAX_GSO_SEGMENTS: usize = 64;
/// Largest UDP payload: 65,535 bytes of IPv4 packet less 20 of IP header and 8 of UDP header. Also
/// the most a segmented message may carry in all.
pub(crate) const MAX_UDP_PAYLOAD: usize = 65_507;
/// A receive buffer this large is never truncated by GRO: the kernel stops coalescing before a
/// train reaches 64 KiB (udp_gro_receive_segment).
pub(crate) const GRO_BUFFER_BYTES: usize = 65_535;
/// Ancillary bytes per message: a UDP_GRO or UDP_SEGMENT message takes 24 (CMSG_SPACE of 4 or 2);
/// room for a packet-info message (up to 40) besides, should the loops ask for one later.
const CONTROL_BYTES: usize = 128;
/// CMSG_SPACE(sizeof(u16)): the ancillary bytes of a UDP_SEGMENT message.
// SAFETY: CMSG_SPACE is plain arithmetic on its argument; it touches no memory.
const SEGMENT_CONTROL_SPACE: usize = unsafe { libc::CMSG_SPACE(size_of::<u16>() as c_uint) } as usize;
/// CMSG_LEN(sizeof(int)): the length a UDP_GRO message (an int) must at least have.
// SAFETY: as above.
const GRO_CONTROL_LEN: usize = unsafe { libc::CMSG_LEN(size_of::<c_int>() as c_uint) } as usize;

/// How a [`BatchedUdpSocket`] is set up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct UdpSocketOptions {
    /// SO_REUSEPORT, so that every worker binds its own socket on the one port (the kernel spreads
    /// datagrams over them by a hash of the addresses, so one client always reaches one worker).
    pub(crate) reuse_port: bool,
    /// SO_RCVBUF in bytes; 0 leaves the kernel's default. The kernel caps it at net.core.rmem_max.
    pub(crate) receive_buffer: usize,
    /// SO_SNDBUF in bytes; 0 leaves the kernel's default. The kernel caps it at net.core.wmem_max.
    pub(crate) send_buffer: usize,
    /// Asks for UDP_GRO; only with receive buffers of [`GRO_BUFFER_BYTES`] (see the module docs).
    pub(crate) gro: bool,
}

/// Whether segmented sends (UDP_SEGMENT) go out as one message or are cut into plain datagrams here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GsoState {
    /// The kernel refused the UDP_SEGMENT option at setup (before Linux 4.18).
    Unsupported,
    /// The kernel takes the option; no segmented send has gone out yet.
    Untried,
    /// A segmented send went out.
    Working,
    /// The first segmented send failed with EIO or EINVAL: segmented messages are cut here since.
    Refused,
}

impl GsoState {
    /// Segmented messages are handed to the kernel whole, with UDP_SEGMENT.
    pub(crate) fn is_usable(self) -> bool {
        matches!(self, GsoState::Untried | GsoState::Working)
    }
}

/// What the socket did, for the loop to report (messages per call are the ratio of two counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct UdpBatchCounters {
    /// `recvmmsg` calls, those that found nothing included.
    pub(crate) receive_calls: u64,
    /// `recvmmsg` calls that found nothing (EAGAIN).
    pub(crate) receive_calls_empty: u64,
    /// Messages received: one per buffer filled, however many datagrams GRO coalesced into it.
    pub(crate) messages_received: u64,
    /// Whole datagrams received: each segment of a coalesced message counts.
    pub(crate) datagrams_received: u64,
    /// Messages cut short by a small buffer (or a small ancillary buffer).
    pub(crate) messages_truncated: u64,
    /// `sendmmsg` calls, those that sent nothing included.
    pub(crate) send_calls: u64,
    /// `sendmmsg` calls that sent nothing because the socket buffer was full (EAGAIN).
    pub(crate) send_calls_blocked: u64,
    /// Messages the kernel took whole.
    pub(crate) messages_sent: u64,
    /// Datagrams on the wire: each segment of a segmented message counts.
    pub(crate) datagrams_sent: u64,
    /// Messages the kernel refused (EMSGSIZE, unreachable...), dropped as the network would.
    pub(crate) messages_refused: u64,
    /// Segmented messages refused with EIO/EINVAL and sent cut into plain datagrams instead.
    pub(crate) gso_fallbacks: u64,
}

/// A UDP socket that receives and sends in batches; see the module docs for the call order.
#[derive(Debug)]
pub(crate) struct BatchedUdpSocket {
    socket: mio::net::UdpSocket,
    is_ipv6: bool,
    gro_enabled: bool,
    gso: GsoState,
    counters: UdpBatchCounters,
}

impl BatchedUdpSocket {
    /// Binds a non-blocking UDP socket on `addr` (IPv4 or IPv6) set up as `options` says, with Don't
    /// Fragment: datagrams larger than the path MTU fail with EMSGSIZE instead of being fragmented.
    ///
    /// UDP_GRO is asked for only with `options.gro` and left off if the kernel refuses it (see
    /// [`Self::gro_enabled`]); UDP_SEGMENT is probed on a throwaway socket (see [`Self::gso`]).
    pub(crate) fn bind(addr: SocketAddr, options: &UdpSocketOptions) -> io::Result<BatchedUdpSocket> {
        let domain = Domain::for_address(addr);
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_nonblocking(true)?;
        if options.reuse_port {
            socket.set_reuse_port(true)?;
        }
        if options.receive_buffer > 0 {
            socket.set_recv_buffer_size(options.receive_buffer)?;
            // The kernel doubles what it is given (for its bookkeeping) and caps it silently.
            let applied = socket.recv_buffer_size()?;
            if applied < options.receive_buffer {
                tracing::debug!(
                    wanted = options.receive_buffer,
                    applied,
                    "SO_RCVBUF capped by net.core.rmem_max"
                );
            }
        }
        if options.send_buffer > 0 {
            socket.set_send_buffer_size(options.send_buffer)?;
            let applied = socket.send_buffer_size()?;
            if applied < options.send_buffer {
                tracing::debug!(
                    wanted = options.send_buffer,
                    applied,
                    "SO_SNDBUF capped by net.core.wmem_max"
                );
            }
        }
        let fd = socket.as_raw_fd();
        set_dont_fragment(fd, addr.is_ipv6())?;
        socket.bind(&addr.into())?;
        let gro_enabled = options.gro
            && match set_int_option(fd, libc::SOL_UDP, libc::UDP_GRO, 1) {
                Ok(()) => true,
                Err(error) => {
                    tracing::debug!(%error, "UDP_GRO refused; receiving datagram by datagram");
                    false
                }
            };
        let gso = probe_gso(domain);
        let socket = mio::net::UdpSocket::from_std(socket.into());
        Ok(BatchedUdpSocket {
            socket,
            is_ipv6: addr.is_ipv6(),
            gro_enabled,
            gso,
            counters: UdpBatchCounters::default(),
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The mio socket, to register with a poll (readiness only: the batches go through `self`).
    pub(crate) fn source(&mut self) -> &mut mio::net::UdpSocket {
        &mut self.socket
    }

    /// The kernel took UDP_GRO: received messages may hold several datagrams.
    pub(crate) fn gro_enabled(&self) -> bool {
        self.gro_enabled
    }

    /// Whether segmented messages go out whole (UDP_SEGMENT) or are cut here.
    pub(crate) fn gso(&self) -> GsoState {
        self.gso
    }

    /// What the socket did so far.
    pub(crate) fn counters(&self) -> UdpBatchCounters {
        self.counters
    }

    /// Receives up to `batch.capacity()` messages with one `recvmmsg(2)`, message `i` into the `i`th
    /// of `buffers` (those beyond the capacity are not used); returns how many arrived, described by
    /// [`RecvBatch::datagrams`]. Retries on EINTR. Allocates nothing.
    ///
    /// # Errors
    ///
    /// `WouldBlock` when nothing is waiting (the loop then waits for readability); any other error
    /// of `recvmmsg`. Without buffers it returns `Ok(0)` and makes no call.
    pub(crate) fn recv_batch<'buffers>(
        &mut self,
        batch: &mut RecvBatch,
        buffers: impl IntoIterator<Item = &'buffers mut [u8]>,
    ) -> io::Result<usize> {
        batch.datagrams.clear();
        let offered = batch.prepare(buffers);
        if offered == 0 {
            return Ok(0);
        }
        let fd = self.socket.as_raw_fd();
        let received = loop {
            self.counters.receive_calls += 1;
            // SAFETY: `prepare` pointed the first `offered` headers at this batch's own address and
            // control arrays (alive and untouched until we return) and at the caller's buffers, which
            // stay borrowed for `'buffers`, beyond this call; each iovec has its buffer's length, so
            // the kernel writes only inside them. No timeout pointer: MSG_DONTWAIT returns at once.
            let result = unsafe {
                libc::recvmmsg(
                    fd,
                    batch.headers.as_mut_ptr(),
                    offered as c_uint,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                )
            };
            if result >= 0 {
                break result as usize;
            }
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    self.counters.receive_calls_empty += 1;
                    return Err(error);
                }
                _ => return Err(error),
            }
        };
        batch.parse(received, self.is_ipv6);
        self.counters.messages_received += received as u64;
        for datagram in &batch.datagrams {
            self.counters.datagrams_received += datagram.segment_count() as u64;
            self.counters.messages_truncated += u64::from(datagram.truncated);
        }
        Ok(received)
    }

    /// Hands `outgoing`'s unsent messages to the kernel, with as few `sendmmsg(2)` calls as it takes
    /// (one, unless segmented messages must be cut or more messages wait than one call takes);
    /// returns how many messages the kernel took whole in this call. Retries on EINTR. Allocates
    /// nothing.
    ///
    /// Call it until [`Outgoing::is_done`] or `WouldBlock`: after a partial send (the kernel took
    /// some), the rest waits for the next call, which also reports why the kernel stopped.
    ///
    /// # Errors
    ///
    /// - `WouldBlock` when the kernel took no message (the socket buffer is full); wait for
    ///   writability.
    /// - Any other error: the kernel refused the first unsent message (EMSGSIZE beyond the path MTU,
    ///   a v6 destination on a v4 socket, unreachable...). That message is dropped, as the network
    ///   would drop it, and counted in [`Outgoing::consumed`]; call again for the rest.
    pub(crate) fn send_batch(&mut self, outgoing: &mut Outgoing<'_, '_>) -> io::Result<usize> {
        let batch = &mut *outgoing.batch;
        let mut taken = 0;
        while batch.consumed < batch.messages.len() {
            let message = batch.messages[batch.consumed];
            let cut_here = message.segment_size > 0 && (batch.cut_current || !self.gso.is_usable());
            let step = if cut_here { self.send_cut(batch) } else { self.send_run(batch) };
            match step {
                Ok(SendStep { completed, stalled }) => {
                    taken += completed;
                    // The kernel stopped short: EAGAIN or an error on the next message. Return what
                    // went; with no whole message taken yet (segments of a cut one went), try again
                    // here, and the kernel says why it stopped.
                    if stalled && taken > 0 {
                        return Ok(taken);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.counters.send_calls_blocked += 1;
                    return if taken > 0 { Ok(taken) } else { Err(error) };
                }
                Err(error) if !cut_here && message.segment_size > 0 && is_gso_refusal(&error) => {
                    self.counters.gso_fallbacks += 1;
                    if self.gso == GsoState::Untried {
                        tracing::info!(%error, "UDP_SEGMENT refused on the first segmented send: cutting datagrams here");
                        self.gso = GsoState::Refused;
                    } else {
                        // It worked before: this message (its segment size, its route) is the
                        // trouble, not the kernel. Only it goes out cut.
                        batch.cut_current = true;
                    }
                }
                Err(error) => {
                    if taken > 0 {
                        // Leave the message: the next call meets the error first and reports it.
                        return Ok(taken);
                    }
                    self.counters.messages_refused += 1;
                    batch.finish_current();
                    return Err(error);
                }
            }
        }
        Ok(taken)
    }

    /// One `sendmmsg` of the unsent messages from the first up to the first that must be cut (or as
    /// many as the headers hold).
    fn send_run(&mut self, batch: &mut SendBatch) -> io::Result<SendStep> {
        let start = batch.consumed;
        let gso_usable = self.gso.is_usable();
        let iovecs = batch.iovecs.as_mut_ptr();
        let controls = batch.controls.as_mut_ptr();
        let mut run = 0;
        for message in &batch.messages[start..] {
            if run == batch.headers.len() || (message.segment_size > 0 && !gso_usable) {
                break;
            }
            let destination = &mut batch.destinations[run];
            *destination = SockAddr::from(self.destination_for(message.destination));
            let header = &mut batch.headers[run];
            header.msg_len = 0;
            let msg = &mut header.msg_hdr;
            msg.msg_name = destination.as_ptr().cast_mut().cast();
            msg.msg_namelen = destination.len();
            msg.msg_iov = iovecs.wrapping_add(message.first_iovec);
            msg.msg_iovlen = message.iovec_count as _;
            msg.msg_flags = 0;
            if message.segment_size > 0 {
                msg.msg_control = controls.wrapping_add(run).cast();
                msg.msg_controllen = SEGMENT_CONTROL_SPACE as _;
                write_segment_size(msg, message.segment_size);
            } else {
                msg.msg_control = ptr::null_mut();
                msg.msg_controllen = 0;
            }
            run += 1;
        }
        let sent = self.sendmmsg(&mut batch.headers[..run])?;
        for message in &batch.messages[start..start + sent] {
            self.counters.datagrams_sent += message.datagram_count() as u64;
            if message.segment_size > 0 && self.gso == GsoState::Untried {
                self.gso = GsoState::Working;
            }
        }
        self.counters.messages_sent += sent as u64;
        batch.consumed += sent;
        Ok(SendStep { completed: sent, stalled: sent < run })
    }

    /// One `sendmmsg` of the first unsent message cut into its datagrams (from the first not yet
    /// sent): GSO done by hand, for a kernel or route that refuses UDP_SEGMENT.
    #[allow(clippy::unnecessary_cast, reason = "msg_iovlen is a c_int on musl")]
    fn send_cut(&mut self, batch: &mut SendBatch) -> io::Result<SendStep> {
        let message = batch.messages[batch.consumed];
        let segment_size = usize::from(message.segment_size);
        let first_segment = batch.segments_sent;
        let segments = message.datagram_count() - first_segment;
        let pieces = &batch.iovecs[message.first_iovec..message.first_iovec + message.iovec_count];

        // Find where the first unsent segment starts: piece `piece` at byte `offset`.
        let (mut piece, mut offset) = (0, 0);
        let mut skip = first_segment * segment_size;
        while skip > 0 {
            let left = pieces[piece].iov_len - offset;
            if skip < left {
                offset += skip;
                break;
            }
            skip -= left;
            piece += 1;
            offset = 0;
        }
        // Each segment's iovec: the pieces it overlaps, trimmed to its bytes. At most one more iovec
        // per segment than pieces in all, which `split_iovecs` is sized for.
        let mut used = 0;
        for header in &mut batch.headers[..segments] {
            let start = used;
            let mut wanted = segment_size;
            while wanted > 0 && piece < pieces.len() {
                let take = (pieces[piece].iov_len - offset).min(wanted);
                batch.split_iovecs[used] = libc::iovec {
                    iov_base: pieces[piece].iov_base.cast::<u8>().wrapping_add(offset).cast(),
                    iov_len: take,
                };
                used += 1;
                wanted -= take;
                offset += take;
                if offset == pieces[piece].iov_len {
                    piece += 1;
                    offset = 0;
                }
            }
            header.msg_hdr.msg_iovlen = (used - start) as _;
        }
        let destination = &mut batch.destinations[0];
        *destination = SockAddr::from(self.destination_for(message.destination));
        let split_iovecs = batch.split_iovecs.as_mut_ptr();
        let mut next_iovec = 0;
        for header in &mut batch.headers[..segments] {
            header.msg_len = 0;
            let msg = &mut header.msg_hdr;
            msg.msg_name = destination.as_ptr().cast_mut().cast();
            msg.msg_namelen = destination.len();
            msg.msg_iov = split_iovecs.wrapping_add(next_iovec);
            next_iovec += msg.msg_iovlen as usize;
            msg.msg_control = ptr::null_mut();
            msg.msg_controllen = 0;
            msg.msg_flags = 0;
        }
        let sent = self.sendmmsg(&mut batch.headers[..segments])?;
        self.counters.datagrams_sent += sent as u64;
        batch.segments_sent += sent;
        let completed = usize::from(batch.segments_sent == message.datagram_count());
        if completed == 1 {
            self.counters.messages_sent += 1;
            batch.finish_current();
        }
        Ok(SendStep { completed, stalled: sent < segments })
    }

    /// `sendmmsg` of `headers`, retried on EINTR; how many the kernel took.
    fn sendmmsg(&mut self, headers: &mut [libc::mmsghdr]) -> io::Result<usize> {
        let fd = self.socket.as_raw_fd();
        loop {
            self.counters.send_calls += 1;
            // SAFETY: every header points at destinations and control buffers of the batch, alive
            // and untouched until we return, and at iovecs whose pieces are borrowed by the
            // `Outgoing` for `'data`, beyond this call; the kernel only reads them (it writes the
            // headers' `msg_len`, inside `headers`).
            let result = unsafe {
                libc::sendmmsg(fd, headers.as_mut_ptr(), headers.len() as c_uint, libc::MSG_DONTWAIT)
            };
            if result >= 0 {
                return Ok(result as usize);
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }

    /// An IPv6 socket reaches IPv4 peers through their v4-mapped address (and reports them as
    /// IPv4, see [`RecvBatch::parse`]).
    fn destination_for(&self, destination: SocketAddr) -> SocketAddr {
        match destination {
            SocketAddr::V4(v4) if self.is_ipv6 => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            other => other,
        }
    }

    #[cfg(test)]
    fn pretend_gso_refused(&mut self) {
        self.gso = GsoState::Refused;
    }
}

impl mio::event::Source for BatchedUdpSocket {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.socket.register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.socket.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.socket.deregister(registry)
    }
}

/// What one `sendmmsg` did to the batch.
struct SendStep {
    /// Messages finished (sent whole).
    completed: usize,
    /// The kernel took fewer than it was offered.
    stalled: bool,
}

/// EIO (the device cannot checksum segments) or EINVAL (the kernel will not segment this) on a
/// message with UDP_SEGMENT: what quinn-udp also reads as "no GSO here".
fn is_gso_refusal(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EIO | libc::EINVAL))
}

/// Ancillary bytes, aligned for the `cmsghdr` at their start.
#[repr(C)]
#[derive(Clone, Copy)]
struct ControlBuffer {
    _align: [libc::cmsghdr; 0],
    bytes: [u8; CONTROL_BYTES],
}

const EMPTY_CONTROL: ControlBuffer = ControlBuffer { _align: [], bytes: [0; CONTROL_BYTES] };

/// Writes a UDP_SEGMENT message of `segment_size` at the start of `msg`'s control buffer.
fn write_segment_size(msg: &mut libc::msghdr, segment_size: u16) {
    // SAFETY: `msg_control` points at a `ControlBuffer` (CONTROL_BYTES, aligned for `cmsghdr`) that
    // nothing else borrows, and `msg_controllen` is SEGMENT_CONTROL_SPACE <= CONTROL_BYTES, at least
    // a header, so CMSG_FIRSTHDR returns its start, not null; header and u16 fit in that space.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as c_uint) as _;
        ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment_size);
    }
}

/// The segment size of a UDP_GRO message among `msg`'s ancillary data, if any.
#[allow(clippy::unnecessary_cast, reason = "msg_controllen is a socklen_t on musl")]
fn gro_segment_size(msg: &libc::msghdr) -> Option<usize> {
    if msg.msg_control.is_null() || (msg.msg_controllen as usize) < size_of::<libc::cmsghdr>() {
        return None;
    }
    // SAFETY: the kernel set `msg_controllen` to the ancillary bytes it wrote into the control buffer
    // `msg_control` points at (CONTROL_BYTES, aligned for `cmsghdr`); CMSG_FIRSTHDR/CMSG_NXTHDR stay
    // inside those bytes, and the data is read only when its header says it holds an int.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP
                && (*cmsg).cmsg_type == libc::UDP_GRO
                && (*cmsg).cmsg_len as usize >= GRO_CONTROL_LEN
            {
                let size = ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>());
                return usize::try_from(size).ok().filter(|&size| size > 0);
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    None
}

/// One message [`BatchedUdpSocket::recv_batch`] received, into the buffer of the same index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReceivedDatagram {
    /// Who sent it (an IPv4 peer of an IPv6 socket as IPv4).
    pub(crate) source: SocketAddr,
    /// Bytes written into the buffer: fewer than sent when truncated.
    pub(crate) len: usize,
    /// The size of each datagram within those bytes when GRO coalesced several from `source` (the
    /// last may be shorter); `None` for a single datagram.
    pub(crate) gro_segment_size: Option<usize>,
    /// The buffer was too small (or the ancillary buffer, which could hide a GRO segment size): the
    /// bytes past the last whole segment are lost.
    pub(crate) truncated: bool,
}

impl ReceivedDatagram {
    /// The size of each datagram within the message: the GRO segment size, or its length.
    pub(crate) fn segment_size(&self) -> usize {
        self.gro_segment_size.unwrap_or(self.len)
    }

    /// The whole datagrams within `buffer` (the buffer this message was received into), in the order
    /// they were sent: one, several when coalesced, and none of those cut short by truncation. A
    /// datagram of zero bytes yields nothing.
    pub(crate) fn segments<'a>(&self, buffer: &'a [u8]) -> std::slice::Chunks<'a, u8> {
        buffer[..self.whole_bytes().min(buffer.len())].chunks(self.segment_size().max(1))
    }

    /// How many whole datagrams [`Self::segments`] yields.
    pub(crate) fn segment_count(&self) -> usize {
        self.whole_bytes().div_ceil(self.segment_size().max(1))
    }

    /// The received bytes that hold whole datagrams: all of them, unless truncation cut the last.
    fn whole_bytes(&self) -> usize {
        match (self.truncated, self.gro_segment_size) {
            (false, _) => self.len,
            // The kernel copies a coalesced train from its start: the segments before the cut are whole.
            (true, Some(segment_size)) => self.len / segment_size * segment_size,
            (true, None) => 0,
        }
    }
}

/// The arrays one `recvmmsg` needs (headers, iovecs, source addresses, ancillary buffers), allocated
/// once, and what the last call received.
pub(crate) struct RecvBatch {
    headers: Box<[libc::mmsghdr]>,
    iovecs: Box<[libc::iovec]>,
    sources: Box<[libc::sockaddr_storage]>,
    controls: Box<[ControlBuffer]>,
    datagrams: Vec<ReceivedDatagram>,
}

// SAFETY: the raw pointers inside the headers and iovecs point into this struct's own arrays or into
// buffers borrowed for one `recv_batch` call; they are rewritten before every call and never read
// outside one, so moving the struct to another thread moves nothing shared.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.capacity())
            .field("received", &self.datagrams.len())
            .finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// Room for `capacity` messages per call (1 to 1,024, the kernel's most).
    pub(crate) fn new(capacity: usize) -> RecvBatch {
        let capacity = capacity.clamp(1, MAX_PER_CALL);
        RecvBatch {
            headers: (0..capacity).map(|_| zeroed_mmsghdr()).collect(),
            iovecs: (0..capacity).map(|_| empty_iovec()).collect(),
            // SAFETY: sockaddr_storage is plain integers; all zeros is a valid (AF_UNSPEC) value.
            sources: (0..capacity).map(|_| unsafe { std::mem::zeroed::<libc::sockaddr_storage>() }).collect(),
            controls: vec![EMPTY_CONTROL; capacity].into_boxed_slice(),
            datagrams: Vec::with_capacity(capacity),
        }
    }

    /// Messages one call receives at most.
    pub(crate) fn capacity(&self) -> usize {
        self.headers.len()
    }

    /// What the last [`BatchedUdpSocket::recv_batch`] received: entry `i` is in buffer `i`.
    pub(crate) fn datagrams(&self) -> &[ReceivedDatagram] {
        &self.datagrams
    }

    /// Points the headers at `buffers` (as many as fit) and at this batch's address and control
    /// arrays; returns how many headers are ready.
    fn prepare<'buffers>(&mut self, buffers: impl IntoIterator<Item = &'buffers mut [u8]>) -> usize {
        let mut offered = 0;
        for (iovec, buffer) in self.iovecs.iter_mut().zip(buffers) {
            *iovec = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: buffer.len() };
            offered += 1;
        }
        // Pointers taken once per array, after the writes above: indexing an array again would
        // reborrow it and retire pointers taken before.
        let iovecs = self.iovecs.as_mut_ptr();
        let sources = self.sources.as_mut_ptr();
        let controls = self.controls.as_mut_ptr();
        for (index, header) in self.headers[..offered].iter_mut().enumerate() {
            header.msg_len = 0;
            let msg = &mut header.msg_hdr;
            msg.msg_name = sources.wrapping_add(index).cast::<c_void>();
            msg.msg_namelen = size_of::<libc::sockaddr_storage>() as socklen_t;
            msg.msg_iov = iovecs.wrapping_add(index);
            msg.msg_iovlen = 1;
            msg.msg_control = controls.wrapping_add(index).cast::<c_void>();
            msg.msg_controllen = CONTROL_BYTES as _;
            msg.msg_flags = 0;
        }
        offered
    }

    /// Reads what the kernel wrote into the first `received` headers.
    fn parse(&mut self, received: usize, is_ipv6: bool) {
        for (header, source) in self.headers[..received].iter().zip(self.sources.iter()) {
            let msg = &header.msg_hdr;
            let len = header.msg_len as usize;
            let control_truncated = msg.msg_flags & libc::MSG_CTRUNC != 0;
            let truncated = msg.msg_flags & libc::MSG_TRUNC != 0 || control_truncated;
            let segment_size = if control_truncated { None } else { gro_segment_size(msg) };
            let source = socket_addr_from(source, msg.msg_namelen)
                .map(|addr| if is_ipv6 { canonical(addr) } else { addr })
                // Never for a UDP socket; a source nobody has a session with is dropped by the caller.
                .unwrap_or(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)));
            self.datagrams.push(ReceivedDatagram { source, len, gro_segment_size: segment_size, truncated });
        }
    }
}

/// One message of an [`Outgoing`] list: where it goes and which iovecs of the batch hold it.
#[derive(Clone, Copy, Debug)]
struct OutgoingMessage {
    destination: SocketAddr,
    first_iovec: usize,
    iovec_count: usize,
    bytes: usize,
    /// 0: one datagram; else the size of each datagram (UDP_SEGMENT).
    segment_size: u16,
}

impl OutgoingMessage {
    fn datagram_count(&self) -> usize {
        if self.segment_size == 0 { 1 } else { self.bytes.div_ceil(usize::from(self.segment_size)) }
    }
}

/// Why [`Outgoing::push`] did not take a message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum PushError {
    /// No room left for this message in this batch: send, then begin a new one.
    #[error("the send batch is full")]
    BatchFull,
    /// More pieces than a message may have (1,024) or the batch can hold at all.
    #[error("a message of more pieces than a send batch takes")]
    TooManyPieces,
    /// More bytes than a datagram holds (65,507), or, segmented, than 64 segments.
    #[error("a message of {bytes} bytes is too large")]
    TooLarge { bytes: usize },
    /// Port 0 is no destination (the kernel refuses it with EINVAL, which would read as no GSO).
    #[error("destination port 0")]
    NoPort,
}

/// The arrays one `sendmmsg` needs (headers, destinations, ancillary buffers, iovecs), allocated
/// once; [`SendBatch::begin`] lends them to a list of messages.
pub(crate) struct SendBatch {
    /// One per message of a call, and at least one per segment of a message cut by hand.
    headers: Box<[libc::mmsghdr]>,
    destinations: Box<[SockAddr]>,
    controls: Box<[ControlBuffer]>,
    /// The pieces of every message, message after message.
    iovecs: Box<[libc::iovec]>,
    /// The pieces of one message cut at its segment boundaries.
    split_iovecs: Box<[libc::iovec]>,
    messages: Vec<OutgoingMessage>,
    max_messages: usize,
    iovecs_used: usize,
    /// Messages sent or refused, from the first.
    consumed: usize,
    /// Segments of `messages[consumed]` already sent, while it goes out cut.
    segments_sent: usize,
    /// `messages[consumed]` goes out cut though GSO works (the kernel refused it whole).
    cut_current: bool,
}

// SAFETY: the raw pointers inside the headers and iovecs point into this struct's own arrays or into
// bytes borrowed by an `Outgoing` (which borrows this struct); they are rewritten before every call
// and never read outside one, so moving the struct to another thread moves nothing shared.
unsafe impl Send for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("max_messages", &self.max_messages)
            .field("max_iovecs", &self.iovecs.len())
            .field("messages", &self.messages.len())
            .field("consumed", &self.consumed)
            .finish_non_exhaustive()
    }
}

impl SendBatch {
    /// Room for `max_messages` messages (1 to 1,024) of `max_iovecs` pieces in all.
    pub(crate) fn new(max_messages: usize, max_iovecs: usize) -> SendBatch {
        let max_messages = max_messages.clamp(1, MAX_PER_CALL);
        let max_iovecs = max_iovecs.max(1);
        let headers = max_messages.max(MAX_GSO_SEGMENTS);
        let unspecified = SockAddr::from(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)));
        SendBatch {
            headers: (0..headers).map(|_| zeroed_mmsghdr()).collect(),
            destinations: vec![unspecified; headers].into_boxed_slice(),
            controls: vec![EMPTY_CONTROL; max_messages].into_boxed_slice(),
            iovecs: vec![empty_iovec(); max_iovecs].into_boxed_slice(),
            split_iovecs: vec![empty_iovec(); max_iovecs + MAX_GSO_SEGMENTS].into_boxed_slice(),
            messages: Vec::with_capacity(max_messages),
            max_messages,
            iovecs_used: 0,
            consumed: 0,
            segments_sent: 0,
            cut_current: false,
        }
    }

    /// Starts a new, empty list of messages whose pieces borrow `'data` (whatever the last list left
    /// unsent is forgotten).
    pub(crate) fn begin<'data>(&mut self) -> Outgoing<'_, 'data> {
        self.messages.clear();
        self.iovecs_used = 0;
        self.consumed = 0;
        self.segments_sent = 0;
        self.cut_current = false;
        Outgoing { batch: self, data: PhantomData }
    }

    /// The first unsent message is done with (sent or refused).
    fn finish_current(&mut self) {
        self.consumed += 1;
        self.segments_sent = 0;
        self.cut_current = false;
    }

    /// Adds a message of `pieces`; see [`Outgoing::push`] and [`Outgoing::push_segmented`]. The
    /// pointers it keeps are used only through the `Outgoing` that borrows both this batch and the
    /// pieces.
    fn push<'data>(
        &mut self,
        destination: SocketAddr,
        segment_size: u16,
        pieces: impl IntoIterator<Item = &'data [u8]>,
    ) -> Result<(), PushError> {
        if destination.port() == 0 {
            return Err(PushError::NoPort);
        }
        if self.messages.len() == self.max_messages {
            return Err(PushError::BatchFull);
        }
        let first_iovec = self.iovecs_used;
        let mut next = first_iovec;
        let mut bytes = 0;
        for piece in pieces.into_iter().filter(|piece| !piece.is_empty()) {
            if next - first_iovec == MAX_PER_CALL || (next == self.iovecs.len() && first_iovec == 0) {
                return Err(PushError::TooManyPieces);
            }
            if next == self.iovecs.len() {
                return Err(PushError::BatchFull);
            }
            // The kernel only reads through `iov_base` on send; the mutable pointer is its type.
            self.iovecs[next] =
                libc::iovec { iov_base: piece.as_ptr().cast_mut().cast(), iov_len: piece.len() };
            next += 1;
            bytes += piece.len();
        }
        let segment_size = usize::from(segment_size);
        let too_large =
            bytes > MAX_UDP_PAYLOAD || (segment_size > 0 && bytes > segment_size * MAX_GSO_SEGMENTS);
        if too_large {
            return Err(PushError::TooLarge { bytes });
        }
        // One segment or less is a plain datagram: no ancillary data, nothing to cut.
        let segment_size = if bytes > segment_size { segment_size as u16 } else { 0 };
        self.iovecs_used = next;
        self.messages.push(OutgoingMessage {
            destination,
            first_iovec,
            iovec_count: next - first_iovec,
            bytes,
            segment_size,
        });
        Ok(())
    }
}

/// A list of messages being sent: it borrows a [`SendBatch`]'s arrays and, for `'data`, the bytes
/// its messages point to, so that no pointer outlives them.
pub(crate) struct Outgoing<'batch, 'data> {
    batch: &'batch mut SendBatch,
    data: PhantomData<&'data [u8]>,
}

impl std::fmt::Debug for Outgoing<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing").field("batch", &self.batch).finish()
    }
}

impl<'data> Outgoing<'_, 'data> {
    /// Adds one datagram to `destination` made of `pieces` in order (a header, then frame slices;
    /// empty pieces are skipped). Nothing is added on error.
    ///
    /// # Errors
    ///
    /// [`PushError::BatchFull`] when this batch has no room left for it (send, then begin again);
    /// the others when no batch could take it.
    pub(crate) fn push(
        &mut self,
        destination: SocketAddr,
        pieces: impl IntoIterator<Item = &'data [u8]>,
    ) -> Result<(), PushError> {
        self.batch.push(destination, 0, pieces)
    }

    /// Adds datagrams of `segment_size` bytes each (the last may be shorter) to `destination`, cut
    /// from `pieces` laid end to end: one message with UDP_SEGMENT where the kernel takes it, cut
    /// into plain datagrams by [`BatchedUdpSocket::send_batch`] where it does not. At most
    /// [`MAX_GSO_SEGMENTS`] segments and [`MAX_UDP_PAYLOAD`] bytes; one segment or less (or a
    /// `segment_size` of 0) is a plain datagram. Nothing is added on error.
    ///
    /// # Errors
    ///
    /// As [`Self::push`].
    pub(crate) fn push_segmented(
        &mut self,
        destination: SocketAddr,
        segment_size: u16,
        pieces: impl IntoIterator<Item = &'data [u8]>,
    ) -> Result<(), PushError> {
        self.batch.push(destination, segment_size, pieces)
    }

    /// Messages added.
    pub(crate) fn len(&self) -> usize {
        self.batch.messages.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.batch.messages.is_empty()
    }

    /// Messages done with, from the first: sent, or refused by the kernel and dropped.
    pub(crate) fn consumed(&self) -> usize {
        self.batch.consumed
    }

    /// Every message was sent or refused.
    pub(crate) fn is_done(&self) -> bool {
        self.batch.consumed == self.batch.messages.len()
    }
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is integers and raw pointers; all zeros (null pointers, zero lengths) is valid.
    unsafe { std::mem::zeroed() }
}

fn empty_iovec() -> libc::iovec {
    libc::iovec { iov_base: ptr::null_mut(), iov_len: 0 }
}

/// The socket address the kernel wrote into `storage` (`len` bytes), if it is IPv4 or IPv6.
fn socket_addr_from(storage: &libc::sockaddr_storage, len: socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match c_int::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the kernel wrote a sockaddr_in, which sockaddr_storage is large
            // and aligned enough to hold.
            let addr = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(addr.sin_port))))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a sockaddr_in6.
            let addr = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(addr.sin6_port),
                addr.sin6_flowinfo,
                addr.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// An IPv4 peer of a dual-stack socket arrives as `::ffff:a.b.c.d`; sessions and per-IP limits see
/// it as the IPv4 address it is.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddr::V4(SocketAddrV4::new(ip, v6.port())),
            None => addr,
        },
        v4 => v4,
    }
}

/// Don't Fragment: IP_PMTUDISC_DO (IPv4), IPV6_PMTUDISC_DO and IPV6_DONTFRAG (IPv6; plus the IPv4
/// option for v4-mapped peers of a dual-stack socket, where the kernel takes it).
fn set_dont_fragment(fd: RawFd, is_ipv6: bool) -> io::Result<()> {
    if !is_ipv6 {
        return set_int_option(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO);
    }
    set_int_option(fd, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_DO)?;
    set_int_option(fd, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1)?;
    if let Err(error) = set_int_option(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO) {
        tracing::debug!(%error, "IP_MTU_DISCOVER on an IPv6 socket refused (IPv6 only?)");
    }
    Ok(())
}

/// Whether this kernel takes UDP_SEGMENT (4.18+), asked of a throwaway socket so the worker's keeps
/// no socket-wide segment size.
fn probe_gso(domain: Domain) -> GsoState {
    let Ok(probe) = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)) else {
        return GsoState::Unsupported;
    };
    match set_int_option(probe.as_raw_fd(), libc::SOL_UDP, libc::UDP_SEGMENT, 1200) {
        Ok(()) => GsoState::Untried,
        Err(error) => {
            tracing::debug!(%error, "UDP_SEGMENT refused; datagrams to one client go out one by one");
            GsoState::Unsupported
        }
    }
}

fn set_int_option(fd: RawFd, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
    // SAFETY: the kernel reads `size_of::<c_int>()` bytes from `value`, a live c_int.
    let result = unsafe {
        libc::setsockopt(fd, level, name, ptr::from_ref(&value).cast(), size_of::<c_int>() as socklen_t)
    };
    if result == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
fn int_option(fd: RawFd, level: c_int, name: c_int) -> io::Result<c_int> {
    let mut value: c_int = 0;
    let mut len = size_of::<c_int>() as socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `value`, a live c_int, and the length into `len`.
    let result = unsafe { libc::getsockopt(fd, level, name, ptr::from_mut(&mut value).cast(), &mut len) };
    if result == 0 { Ok(value) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    use gamewire_pool::alloc_counter::{self, CountingAllocator};

    use super::*;

    // Counts only threads that opt in (`count_this_thread`), so the rest of this test binary is
    // merely forwarded to the system allocator.
    #[global_allocator]
    static ALLOCATOR: CountingAllocator = CountingAllocator;

    const DEADLINE: Duration = Duration::from_secs(5);

    fn bind(options: UdpSocketOptions) -> BatchedUdpSocket {
        BatchedUdpSocket::bind("127.0.0.1:0".parse().unwrap(), &options).expect("bind on 127.0.0.1")
    }

    fn client() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        socket
    }

    fn buffers(count: usize, size: usize) -> Vec<Vec<u8>> {
        vec![vec![0; size]; count]
    }

    /// Receives until `wanted` whole datagrams arrived (split by GRO segment size); returns them with
    /// their sources, and the `recvmmsg` calls that found some.
    fn receive(
        socket: &mut BatchedUdpSocket,
        batch: &mut RecvBatch,
        buffers: &mut [Vec<u8>],
        wanted: usize,
    ) -> (Vec<(SocketAddr, Vec<u8>)>, usize) {
        let deadline = Instant::now() + DEADLINE;
        let (mut received, mut calls) = (Vec::new(), 0);
        while received.len() < wanted {
            assert!(Instant::now() < deadline, "timed out with {} of {wanted} datagrams", received.len());
            match socket.recv_batch(batch, buffers.iter_mut().map(Vec::as_mut_slice)) {
                Ok(_) => {
                    calls += 1;
                    for (datagram, buffer) in batch.datagrams().iter().zip(buffers.iter()) {
                        received.extend(
                            datagram.segments(buffer).map(|segment| (datagram.source, segment.to_vec())),
                        );
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(error) => panic!("recv_batch: {error}"),
            }
        }
        (received, calls)
    }

    fn send_all(socket: &mut BatchedUdpSocket, outgoing: &mut Outgoing<'_, '_>) {
        let deadline = Instant::now() + DEADLINE;
        while !outgoing.is_done() {
            assert!(Instant::now() < deadline, "timed out sending");
            match socket.send_batch(outgoing) {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(error) => panic!("send_batch: {error}"),
            }
        }
    }

    fn receive_plain(client: &UdpSocket, count: usize) -> Vec<Vec<u8>> {
        let mut buffer = vec![0; 65536];
        (0..count)
            .map(|_| {
                let (len, _) = client.recv_from(&mut buffer).expect("a datagram within the read timeout");
                buffer[..len].to_vec()
            })
            .collect()
    }

    fn assert_nothing_more(client: &UdpSocket) {
        client.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buffer = [0; 2048];
        let error = client.recv_from(&mut buffer).expect_err("no further datagram");
        assert!(matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut), "{error}");
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }

    /// `len` bytes counting up from `seed`, so that any misplaced byte shows.
    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| seed.wrapping_add((i % 251) as u8)).collect()
    }

    #[test]
    fn a_batch_of_64_datagrams_from_three_clients_arrives_in_few_calls_with_sources_and_contents() {
        let mut server = bind(UdpSocketOptions { receive_buffer: 1 << 20, ..UdpSocketOptions::default() });
        let server_addr = server.local_addr().unwrap();
        let clients = [client(), client(), client()];
        for sequence in 0..64u8 {
            let client = &clients[usize::from(sequence) % 3];
            let mut datagram = pattern(sequence, 100);
            datagram[0] = sequence;
            client.send_to(&datagram, server_addr).unwrap();
        }
        let mut batch = RecvBatch::new(DEFAULT_BATCH);
        let mut buffers = buffers(DEFAULT_BATCH, 2048);
        let (received, calls) = receive(&mut server, &mut batch, &mut buffers, 64);
        eprintln!("64 datagrams in {calls} recvmmsg call(s) that found some; {:?}", server.counters());
        assert!(calls <= 8, "64 datagrams took {calls} calls");
        let mut next_from_client = [0u8, 1, 2];
        for (source, bytes) in &received {
            let client =
                clients.iter().position(|c| c.local_addr().unwrap() == *source).expect("a known source");
            let sequence = next_from_client[client];
            let mut expected = pattern(sequence, 100);
            expected[0] = sequence;
            assert_eq!(bytes, &expected, "datagram {sequence} from client {client}");
            next_from_client[client] += 3;
        }
        assert_eq!(received.len(), 64);
        assert_eq!(server.counters().messages_received, 64);
        assert!(matches!(
            server.recv_batch(&mut batch, buffers.iter_mut().map(Vec::as_mut_slice)),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock
        ));
    }

    #[test]
    fn send_batch_assembles_each_destinations_datagram_from_its_header_and_shared_slices() {
        let mut server = bind(UdpSocketOptions::default());
        let clients = [client(), client(), client(), client()];
        // One "chunk" of encoded frames, shared by every recipient; each gets its own header.
        let frames = pattern(7, 600);
        let (frame_a, frame_b, frame_c) = (&frames[..40], &frames[40..340], &frames[340..347]);
        let headers: Vec<Vec<u8>> = (0..4).map(|i| format!("header of client {i}").into_bytes()).collect();
        let pieces_of = |i: usize| -> Vec<&[u8]> {
            match i {
                0 => vec![&headers[0], frame_a, frame_b, frame_c],
                1 => vec![&headers[1], frame_c, frame_a],
                2 => vec![&headers[2], frame_b],
                _ => vec![&headers[3], frame_a, &[], frame_b, frame_c, frame_a],
            }
        };
        let mut batch = SendBatch::new(DEFAULT_BATCH, 1024);
        let mut outgoing = batch.begin();
        for (i, client) in clients.iter().enumerate() {
            outgoing.push(client.local_addr().unwrap(), pieces_of(i)).unwrap();
        }
        assert_eq!(server.send_batch(&mut outgoing).unwrap(), 4, "the kernel takes all four at once");
        assert!(outgoing.is_done());
        assert_eq!(server.counters().send_calls, 1);
        assert_eq!(server.counters().datagrams_sent, 4);
        for (i, client) in clients.iter().enumerate() {
            let datagram = receive_plain(client, 1).remove(0);
            assert_eq!(datagram, pieces_of(i).concat(), "client {i}");
            assert_nothing_more(client);
        }
    }

    #[test]
    fn a_segmented_message_arrives_as_its_datagrams_with_gso_or_cut_by_the_fallback() {
        let mut server = bind(UdpSocketOptions::default());
        let client = client();
        let destination = client.local_addr().unwrap();
        let payload = pattern(1, 5 * 1200);
        let shorter_last = pattern(9, 4 * 1200 + 500);
        let mut batch = SendBatch::new(DEFAULT_BATCH, 1024);
        let mut outgoing = batch.begin();
        // A header and frame slices whose boundaries do not fall on segment boundaries.
        let (header, rest) = payload.split_at(20);
        let pieces = [header, &rest[..1000], &rest[1000..1001], &rest[1001..]];
        outgoing.push_segmented(destination, 1200, pieces).unwrap();
        outgoing.push_segmented(destination, 1200, [&shorter_last[..]]).unwrap();
        send_all(&mut server, &mut outgoing);
        let counters = server.counters();
        eprintln!("GSO: {:?}; {counters:?}", server.gso());
        match server.gso() {
            GsoState::Working => assert_eq!((counters.send_calls, counters.gso_fallbacks), (1, 0)),
            GsoState::Refused | GsoState::Unsupported => {}
            GsoState::Untried => panic!("a segmented send was made"),
        }
        assert_eq!((counters.messages_sent, counters.datagrams_sent), (2, 10));
        let datagrams = receive_plain(&client, 10);
        let expected: Vec<&[u8]> = payload.chunks(1200).chain(shorter_last.chunks(1200)).collect();
        assert_eq!(datagrams, expected);
        assert_eq!(datagrams[9].len(), 500, "the last segment may be shorter");
        assert_nothing_more(&client);
    }

    #[test]
    fn without_gso_a_segmented_message_is_cut_at_its_segment_boundaries_across_pieces() {
        let mut server = bind(UdpSocketOptions::default());
        server.pretend_gso_refused();
        let client = client();
        let destination = client.local_addr().unwrap();
        let first = pattern(3, 6000);
        let plain = pattern(5, 77);
        let last = pattern(11, 2 * 1000 + 1);
        let mut batch = SendBatch::new(DEFAULT_BATCH, 1024);
        let mut outgoing = batch.begin();
        let pieces = [&first[..7], &first[7..1007], &first[1007..4007], &first[4007..4008], &first[4008..]];
        outgoing.push_segmented(destination, 1200, pieces).unwrap();
        outgoing.push(destination, [&plain[..]]).unwrap();
        outgoing.push_segmented(destination, 1000, [&last[..999], &last[999..]]).unwrap();
        send_all(&mut server, &mut outgoing);
        let counters = server.counters();
        // The cut message, the plain one (the run stops before the next cut one), the last.
        assert_eq!((counters.send_calls, counters.messages_sent, counters.datagrams_sent), (3, 3, 9));
        let expected: Vec<&[u8]> =
            first.chunks(1200).chain(std::iter::once(&plain[..])).chain(last.chunks(1000)).collect();
        assert_eq!(receive_plain(&client, 9), expected);
        assert_nothing_more(&client);
    }

    #[test]
    fn gro_segments_split_back_into_the_datagrams_sent() {
        let mut receiver =
            bind(UdpSocketOptions { gro: true, receive_buffer: 1 << 20, ..UdpSocketOptions::default() });
        let receiver_addr = receiver.local_addr().unwrap();
        eprintln!("UDP_GRO enabled: {}", receiver.gro_enabled());
        let mut batch = RecvBatch::new(DEFAULT_BATCH);
        let mut buffers = buffers(8, GRO_BUFFER_BYTES);

        // Plain datagrams back to back: loopback may or may not coalesce them.
        let sender = client();
        let sent: Vec<Vec<u8>> = (0..20).map(|i| pattern(i, if i == 19 { 300 } else { 1200 })).collect();
        for datagram in &sent {
            sender.send_to(datagram, receiver_addr).unwrap();
        }
        let (received, _) = receive(&mut receiver, &mut batch, &mut buffers, sent.len());
        let coalesced = receiver.counters().messages_received < receiver.counters().datagrams_received;
        eprintln!("20 plain datagrams: coalesced by GRO: {coalesced}; {:?}", receiver.counters());
        assert!(received.iter().all(|(source, _)| *source == sender.local_addr().unwrap()));
        assert_eq!(received.into_iter().map(|(_, bytes)| bytes).collect::<Vec<_>>(), sent);

        // A segmented send over loopback reaches a GRO socket unsplit, where the kernel allows it.
        let mut gso_sender = bind(UdpSocketOptions::default());
        let payload = pattern(42, 4 * 1200 + 700);
        let mut send_batch = SendBatch::new(DEFAULT_BATCH, 16);
        let mut outgoing = send_batch.begin();
        outgoing.push_segmented(receiver_addr, 1200, [&payload[..]]).unwrap();
        send_all(&mut gso_sender, &mut outgoing);
        let before = receiver.counters().messages_received;
        let (received, _) = receive(&mut receiver, &mut batch, &mut buffers, 5);
        let messages = receiver.counters().messages_received - before;
        eprintln!("5 segments sent with GSO ({:?}) arrived as {messages} message(s)", gso_sender.gso());
        if messages == 1 {
            assert_eq!(batch.datagrams()[0].gro_segment_size, Some(1200));
        }
        assert_eq!(
            received.into_iter().map(|(_, bytes)| bytes).collect::<Vec<_>>(),
            payload.chunks(1200).collect::<Vec<_>>()
        );
    }

    #[test]
    fn splitting_keeps_whole_segments_and_drops_what_truncation_cut() {
        let source = SocketAddr::from(([127, 0, 0, 1], 9));
        let buffer = pattern(0, 4000);
        let datagram =
            |len, gro_segment_size, truncated| ReceivedDatagram { source, len, gro_segment_size, truncated };
        let lengths = |d: ReceivedDatagram| d.segments(&buffer).map(<[u8]>::len).collect::<Vec<_>>();

        assert_eq!(lengths(datagram(3 * 1200 + 100, Some(1200), false)), [1200, 1200, 1200, 100]);
        assert_eq!(lengths(datagram(2400, Some(1200), false)), [1200, 1200]);
        assert_eq!(lengths(datagram(700, None, false)), [700]);
        // Truncated: the segments before the cut are whole, the cut one is dropped.
        assert_eq!(lengths(datagram(3000, Some(1200), true)), [1200, 1200]);
        assert_eq!(lengths(datagram(2400, Some(1200), true)), [1200, 1200]);
        assert_eq!(lengths(datagram(100, Some(1200), true)), Vec::<usize>::new());
        assert_eq!(
            lengths(datagram(100, None, true)),
            Vec::<usize>::new(),
            "a cut single datagram is dropped"
        );
        assert_eq!(lengths(datagram(0, None, false)), Vec::<usize>::new());
        let d = datagram(3 * 1200 + 100, Some(1200), false);
        assert_eq!(d.segments(&buffer).collect::<Vec<_>>(), buffer[..3700].chunks(1200).collect::<Vec<_>>());
        assert_eq!(d.segment_count(), 4);
        assert_eq!(datagram(3000, Some(1200), true).segment_count(), 2);
    }

    #[test]
    fn a_datagram_larger_than_its_buffer_is_reported_truncated_not_misparsed() {
        let mut server = bind(UdpSocketOptions::default());
        let server_addr = server.local_addr().unwrap();
        let sender = client();
        let (large, small) = (pattern(1, 500), pattern(2, 50));
        sender.send_to(&large, server_addr).unwrap();
        sender.send_to(&small, server_addr).unwrap();
        let mut batch = RecvBatch::new(4);
        let mut buffers = buffers(2, 100);
        let deadline = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        while seen.len() < 2 {
            assert!(Instant::now() < deadline, "timed out");
            match server.recv_batch(&mut batch, buffers.iter_mut().map(Vec::as_mut_slice)) {
                Ok(_) => {
                    for (datagram, buffer) in batch.datagrams().iter().zip(&buffers) {
                        seen.push((
                            *datagram,
                            datagram.segments(buffer).map(<[u8]>::to_vec).collect::<Vec<_>>(),
                        ));
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(error) => panic!("{error}"),
            }
        }
        let (cut, cut_segments) = &seen[0];
        assert!(cut.truncated);
        assert_eq!((cut.len, cut.gro_segment_size), (100, None));
        assert!(cut_segments.is_empty(), "nothing of a truncated datagram is handed on");
        let (whole, whole_segments) = &seen[1];
        assert!(!whole.truncated);
        assert_eq!(whole_segments, &[small]);
        assert_eq!(server.counters().messages_truncated, 1);
        assert_eq!(server.counters().datagrams_received, 1);
    }

    #[test]
    fn a_coalesced_train_in_a_small_buffer_keeps_only_its_whole_segments() {
        let mut receiver = bind(UdpSocketOptions { gro: true, ..UdpSocketOptions::default() });
        if !receiver.gro_enabled() {
            eprintln!("SKIPPED: this kernel refuses UDP_GRO");
            return;
        }
        let mut sender = bind(UdpSocketOptions::default());
        let payload = pattern(5, 5 * 1200);
        let mut send_batch = SendBatch::new(4, 4);
        let mut outgoing = send_batch.begin();
        outgoing.push_segmented(receiver.local_addr().unwrap(), 1200, [&payload[..]]).unwrap();
        send_all(&mut sender, &mut outgoing);
        let mut batch = RecvBatch::new(8);
        let mut buffers = buffers(8, 3000);
        let deadline = Instant::now() + DEADLINE;
        let mut received = Vec::new();
        let mut coalesced = false;
        // Coalesced: one message, 2 whole segments and a cut one. Split by the kernel: 5 datagrams.
        while received.len() < 5 && !coalesced {
            assert!(Instant::now() < deadline, "timed out");
            match receiver.recv_batch(&mut batch, buffers.iter_mut().map(Vec::as_mut_slice)) {
                Ok(_) => {
                    for (datagram, buffer) in batch.datagrams().iter().zip(&buffers) {
                        coalesced |= datagram.gro_segment_size.is_some();
                        received.extend(datagram.segments(buffer).map(<[u8]>::to_vec));
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(error) => panic!("{error}"),
            }
        }
        eprintln!(
            "a GSO train into 3,000-byte buffers: coalesced {coalesced}, {} whole datagrams",
            received.len()
        );
        let expected: Vec<&[u8]> = payload.chunks(1200).take(received.len()).collect();
        assert_eq!(received, expected);
        if coalesced {
            let datagram = batch.datagrams()[0];
            assert!(datagram.truncated);
            assert_eq!((datagram.len, datagram.segment_count()), (3000, 2));
        } else {
            assert_eq!(received.len(), 5);
        }
    }

    #[test]
    fn the_socket_sets_dont_fragment() {
        let v4 = bind(UdpSocketOptions::default());
        let fd = v4.socket.as_raw_fd();
        assert_eq!(int_option(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER).unwrap(), libc::IP_PMTUDISC_DO);

        match BatchedUdpSocket::bind("[::1]:0".parse().unwrap(), &UdpSocketOptions::default()) {
            Ok(v6) => {
                let fd = v6.socket.as_raw_fd();
                assert_eq!(
                    int_option(fd, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER).unwrap(),
                    libc::IPV6_PMTUDISC_DO
                );
                assert_eq!(int_option(fd, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG).unwrap(), 1);
            }
            Err(error) => eprintln!("SKIPPED the IPv6 half: no ::1 here ({error})"),
        }
    }

    #[test]
    fn the_socket_takes_its_options_and_shares_the_port_with_reuse_port() {
        let options = UdpSocketOptions {
            reuse_port: true,
            receive_buffer: 256 << 10,
            send_buffer: 128 << 10,
            gro: false,
        };
        let first = bind(options);
        let second =
            BatchedUdpSocket::bind(first.local_addr().unwrap(), &options).expect("a second worker's socket");
        assert_eq!(first.local_addr().unwrap(), second.local_addr().unwrap());
        let fd = first.socket.as_raw_fd();
        assert_eq!(int_option(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT).unwrap(), 1);
        // The kernel doubles the sizes it is given (and caps them at the rmem/wmem maxima).
        assert!(int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap() > 0);
        assert!(int_option(fd, libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap() > 0);
        assert!(!first.gro_enabled(), "GRO only when asked");
        let flags = int_option_fcntl(fd);
        assert_ne!(flags & libc::O_NONBLOCK, 0, "non-blocking");
        let refused = BatchedUdpSocket::bind(first.local_addr().unwrap(), &UdpSocketOptions::default());
        assert!(refused.is_err(), "without SO_REUSEPORT the port is taken");
    }

    fn int_option_fcntl(fd: RawFd) -> c_int {
        // SAFETY: F_GETFL takes no pointer.
        unsafe { libc::fcntl(fd, libc::F_GETFL) }
    }

    #[test]
    fn ipv4_peers_of_a_dual_stack_socket_are_seen_and_answered_as_ipv4() {
        let mut server = match BatchedUdpSocket::bind("[::]:0".parse().unwrap(), &UdpSocketOptions::default())
        {
            Ok(server) => server,
            Err(error) => {
                eprintln!("SKIPPED: no IPv6 here ({error})");
                return;
            }
        };
        let port = server.local_addr().unwrap().port();
        let client = client();
        client.send_to(b"hello over v4", ("127.0.0.1", port)).unwrap();
        let mut batch = RecvBatch::new(4);
        let mut buffers = buffers(4, 2048);
        let (received, _) = receive(&mut server, &mut batch, &mut buffers, 1);
        assert_eq!(received, [(client.local_addr().unwrap(), b"hello over v4".to_vec())]);
        let mut send_batch = SendBatch::new(4, 4);
        let mut outgoing = send_batch.begin();
        outgoing.push(client.local_addr().unwrap(), [&b"answer"[..]]).unwrap();
        send_all(&mut server, &mut outgoing);
        assert_eq!(receive_plain(&client, 1), [b"answer".to_vec()]);
    }

    #[test]
    fn a_refused_message_is_dropped_and_reported_and_the_rest_still_goes() {
        let mut server = bind(UdpSocketOptions::default());
        let client = client();
        let destination = client.local_addr().unwrap();
        let mut batch = SendBatch::new(DEFAULT_BATCH, 16);
        let mut outgoing = batch.begin();
        outgoing.push(destination, [&b"first"[..]]).unwrap();
        // An IPv6 destination on an IPv4 socket: EAFNOSUPPORT.
        outgoing.push("[::1]:9".parse().unwrap(), [&b"nowhere"[..]]).unwrap();
        outgoing.push(destination, [&b"third"[..]]).unwrap();
        assert_eq!(server.send_batch(&mut outgoing).unwrap(), 1, "the kernel stops at the refused one");
        assert_eq!(outgoing.consumed(), 1);
        let error = server.send_batch(&mut outgoing).expect_err("the refusal is reported");
        assert_eq!(error.raw_os_error(), Some(libc::EAFNOSUPPORT));
        assert_eq!(outgoing.consumed(), 2, "and the refused message dropped");
        assert_eq!(server.send_batch(&mut outgoing).unwrap(), 1);
        assert!(outgoing.is_done());
        assert_eq!(server.counters().messages_refused, 1);
        assert_eq!(receive_plain(&client, 2), [b"first".to_vec(), b"third".to_vec()]);
    }

    #[test]
    fn push_refuses_what_a_batch_cannot_hold_and_keeps_the_rest() {
        let destination = SocketAddr::from(([127, 0, 0, 1], 9));
        let bytes = vec![0u8; 70_000];
        let mut batch = SendBatch::new(2, 4);
        let mut outgoing = batch.begin();
        assert_eq!(
            outgoing.push(SocketAddr::from(([127, 0, 0, 1], 0)), [&bytes[..1]]),
            Err(PushError::NoPort)
        );
        assert_eq!(outgoing.push(destination, [&bytes[..]]), Err(PushError::TooLarge { bytes: 70_000 }));
        assert_eq!(
            outgoing.push_segmented(destination, 100, [&bytes[..6401]]),
            Err(PushError::TooLarge { bytes: 6401 }),
            "65 segments"
        );
        assert_eq!(outgoing.push(destination, [&bytes[..1]; 5]), Err(PushError::TooManyPieces));
        outgoing.push(destination, [&bytes[..1]; 3]).unwrap();
        assert_eq!(outgoing.push(destination, [&bytes[..1]; 2]), Err(PushError::BatchFull), "one iovec left");
        outgoing.push(destination, [&bytes[..1]]).unwrap();
        assert_eq!(outgoing.push(destination, [&bytes[..1]]), Err(PushError::BatchFull), "two messages");
        assert_eq!(outgoing.len(), 2);
        let outgoing = batch.begin();
        assert!(outgoing.is_empty() && outgoing.is_done());
    }

    #[test]
    fn receiving_and_sending_batches_allocate_nothing() {
        let mut server =
            bind(UdpSocketOptions { gro: true, receive_buffer: 1 << 20, ..UdpSocketOptions::default() });
        let server_addr = server.local_addr().unwrap();
        let clients = [client(), client(), client()];
        let destinations: Vec<SocketAddr> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
        let mut receive_batch = RecvBatch::new(DEFAULT_BATCH);
        let mut receive_buffers = buffers(DEFAULT_BATCH, 2048);
        let mut send_batch = SendBatch::new(DEFAULT_BATCH + 1, 1024);
        let frames = pattern(0, 3000);
        let headers: Vec<[u8; 8]> = (0..DEFAULT_BATCH as u64).map(u64::to_le_bytes).collect();
        let mut client_buffer = vec![0; 65536];

        alloc_counter::count_this_thread();
        let mut allocations = 0;
        for round in 0..20 {
            for (i, header) in headers.iter().enumerate() {
                clients[i % 3].send_to(header, server_addr).unwrap();
            }
            let deadline = Instant::now() + DEADLINE;
            let mut received = 0;
            while received < DEFAULT_BATCH {
                assert!(Instant::now() < deadline, "timed out receiving");
                let before = alloc_counter::allocations();
                let result =
                    server.recv_batch(&mut receive_batch, receive_buffers.iter_mut().map(Vec::as_mut_slice));
                let datagrams =
                    receive_batch.datagrams().iter().map(ReceivedDatagram::segment_count).sum::<usize>();
                allocations += alloc_counter::allocations() - before;
                match result {
                    Ok(_) => received += datagrams,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(error) => panic!("{error}"),
                }
            }

            let before = alloc_counter::allocations();
            let mut outgoing = send_batch.begin();
            for (i, header) in headers.iter().enumerate() {
                outgoing.push(destinations[i % 3], [&header[..], &frames[..100], &frames[100..164]]).unwrap();
            }
            outgoing.push_segmented(destinations[0], 1200, [&frames[..]]).unwrap();
            while !outgoing.is_done() {
                match server.send_batch(&mut outgoing) {
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(error) => panic!("{error}"),
                }
            }
            allocations += alloc_counter::allocations() - before;

            for (i, client) in clients.iter().enumerate() {
                let expected =
                    DEFAULT_BATCH / 3 + usize::from(i < DEFAULT_BATCH % 3) + if i == 0 { 3 } else { 0 };
                for _ in 0..expected {
                    client.recv_from(&mut client_buffer).expect("every datagram arrives");
                }
            }
            if round == 0 {
                // The first round warms up whatever the kernel and the runtime set up once.
                allocations = 0;
            }
        }
        assert_eq!(allocations, 0, "heap allocations in 19 rounds of recv_batch and send_batch");
        let before = alloc_counter::allocations();
        drop(std::hint::black_box(vec![0u8; 16]));
        assert!(alloc_counter::allocations() > before, "the counter counts this thread");
    }
}
