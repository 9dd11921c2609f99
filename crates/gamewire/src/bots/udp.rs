//! The UDP transport of `gamewire bots --transport udp`: one sans-IO `gamewire_udp` client per bot over its own connected mio socket.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use gamewire_proto::{Channel, PacketKind};
use gamewire_udp::client::{Client, Close, Config, Event, SendError};
use mio::net::UdpSocket;
use mio::{Interest, Token};
use serde::Serialize;

use super::engine::{Received, Sim};
use super::play::{Action, Bot, Link, State};
use crate::clock::monotonic_micros;

/// Least wait before a client's next timer, µs: once `poll_transmit` has run, nothing is due before
/// its next deadline, so a deadline already past must not turn the schedule into a busy loop.
const MIN_TIMER_WAIT_US: u64 = 100;

/// One bot's UDP connection: its socket (connected to the server, so the kernel drops strangers'
/// datagrams) and the client state machine.
#[derive(Debug)]
pub(super) struct UdpLink {
    pub(super) socket: UdpSocket,
    pub(super) client: Client,
    /// Due time (µs) of the `UdpTimer` that counts for this client, `u64::MAX` for none: older
    /// entries left in the schedule are recognised by their due time and skipped.
    timer_due: u64,
    /// Datagrams the kernel would not take (a full send buffer): lost, as the network may lose them.
    send_drops: u64,
}

/// What the UDP clients counted, summed over every client of the run (`Client::stats`).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct UdpCounters {
    pub(crate) datagrams_sent: u64,
    pub(crate) datagrams_received: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_received: u64,
    /// CONNECTs and RESPONSEs sent again for want of an answer.
    pub(crate) handshake_resends: u64,
    /// Reliable frames sent again for want of an acknowledgement.
    pub(crate) reliable_resends: u64,
    /// Datagrams dropped unread: malformed, not for the client, or after it closed.
    pub(crate) dropped: u64,
    /// Datagrams received twice.
    pub(crate) duplicates: u64,
    /// Unreliable frames from the server dropped as older than one already delivered.
    pub(crate) stale_unreliable: u64,
    /// Reliable frames from the server dropped as copies.
    pub(crate) dropped_reliable: u64,
    /// Datagrams the bots' kernel refused to send (full send buffer).
    pub(crate) send_drops: u64,
    /// Handshakes the server never completed.
    pub(crate) handshake_timeouts: u64,
}

impl UdpCounters {
    /// Adds what `link`'s client counted (call once per client: when it is dropped, or at the end).
    pub(super) fn add(&mut self, link: &UdpLink) {
        let stats = link.client.stats();
        self.datagrams_sent += stats.datagrams_sent;
        self.datagrams_received += stats.datagrams_received;
        self.bytes_sent += stats.bytes_sent;
        self.bytes_received += stats.bytes_received;
        self.handshake_resends += stats.handshake_resends;
        self.reliable_resends += stats.reliable_resends;
        self.dropped += stats.dropped;
        self.duplicates += stats.duplicates;
        self.stale_unreliable += stats.stale_unreliable;
        self.dropped_reliable += stats.dropped_reliable;
        self.send_drops += link.send_drops;
    }
}

/// The local address a bot binds: loopback for a server on loopback (as the TCP bots' connections
/// get), otherwise any address of the server's family, which the route to the server picks from.
fn local_for(server: SocketAddr) -> SocketAddr {
    let ip: IpAddr = match server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(ip) if ip.is_loopback() => Ipv6Addr::LOCALHOST.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    SocketAddr::new(ip, 0)
}

fn open_socket(server: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(local_for(server))?;
    socket.connect(server)?;
    Ok(socket)
}

impl Sim<'_> {
    /// The schedule's µs as the clients' `Instant`.
    fn instant(&self, micros: u64) -> Instant {
        self.epoch.0 + Duration::from_micros(micros.saturating_sub(self.epoch.1))
    }

    /// A client's `Instant` as the schedule's µs, rounded up: a timer must not fire before its
    /// deadline (the client would have nothing to do and ask again for the same instant).
    fn micros(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch.0).as_nanos();
        self.epoch.1 + u64::try_from(nanos.div_ceil(1000)).unwrap_or(u64::MAX / 2)
    }

    /// Opens bot `index`'s socket and starts its handshake, HELLO included.
    pub(super) fn connect_udp(&mut self, bot: &mut Bot, index: usize) -> anyhow::Result<()> {
        let server = self.args.addr;
        let Ok(mut socket) = open_socket(server) else {
            self.connect_failed(bot, index);
            return Ok(());
        };
        let hello = self.hello(bot, index);
        let client = Client::new(server, &hello, Config::default(), self.instant(monotonic_micros()))?;
        self.poll().registry().register(&mut socket, Token(index), Interest::READABLE)?;
        bot.stream =
            Some(Link::Udp(Box::new(UdpLink { socket, client, timer_due: u64::MAX, send_drops: 0 })));
        bot.state = State::Connecting;
        self.counters.sent[PacketKind::Hello.id() as usize] += 1;
        self.transmit_udp(bot, index);
        Ok(())
    }

    /// Queues `frame` on `channel`; a full queue (the server acknowledges too slowly) counts a stall
    /// and drops the frame, as a full TCP backlog does.
    pub(super) fn send_udp(
        &mut self,
        bot: &mut Bot,
        index: usize,
        frame: &[u8],
        kind: PacketKind,
        channel: Channel,
    ) {
        let Some(Link::Udp(link)) = &mut bot.stream else { return };
        match link.client.send(frame, channel) {
            Ok(()) => self.counters.sent[kind.id() as usize] += 1,
            Err(SendError::ReliableFull | SendError::UnreliableFull) => {
                self.counters.send_stalls += 1;
                return;
            }
            Err(_) => return,
        }
        self.transmit_udp(bot, index);
    }

    /// Sends every datagram the client has due, then schedules its next timer.
    pub(super) fn transmit_udp(&mut self, bot: &mut Bot, index: usize) {
        let Some(Link::Udp(link)) = &mut bot.stream else { return };
        let now_us = monotonic_micros();
        let now = self.instant(now_us);
        while let Some(len) = link.client.poll_transmit(now, &mut self.datagram) {
            match link.socket.send(&self.datagram[..len]) {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {
                    if link.socket.send(&self.datagram[..len]).is_err() {
                        link.send_drops += 1;
                    }
                }
                // WouldBlock (a full buffer), or the ICMP error of an earlier datagram reported here:
                // either way this one is lost, and the client's resends and timeouts deal with it.
                Err(_) => link.send_drops += 1,
            }
        }
        if let Some(deadline) = link.client.poll_timeout() {
            let due = self.micros(deadline).max(now_us + MIN_TIMER_WAIT_US);
            if due < link.timer_due {
                link.timer_due = due;
                self.at(due, Action::UdpTimer, index, bot.session);
            }
        }
    }

    /// A client's timer came due at `due`: resends, acknowledgements, keepalives, timeouts.
    pub(super) fn udp_timer(&mut self, bot: &mut Bot, index: usize, due: u64) {
        let Some(Link::Udp(link)) = &mut bot.stream else { return };
        if due != link.timer_due {
            return;
        }
        link.timer_due = u64::MAX;
        let now = self.instant(monotonic_micros());
        if let Some(close) = link.client.handle_timeout(now) {
            return self.udp_closed(bot, index, close);
        }
        self.transmit_udp(bot, index);
    }

    /// Receives every datagram waiting on bot `index`'s socket and handles its frames like TCP's.
    pub(super) fn read_udp(&mut self, bot: &mut Bot, index: usize) {
        let mut inbound = std::mem::take(&mut self.inbound);
        while let Some(Link::Udp(link)) = &mut bot.stream {
            let n = match link.socket.recv(&mut self.buffer) {
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP port unreachable of an earlier datagram (no server yet, or gone): the
                // handshake's resends and the idle timeout decide; the error itself is consumed.
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    continue;
                }
                Err(_) => break,
            };
            let now_us = monotonic_micros();
            let now = self.instant(now_us);
            let server = link.client.server();
            let (mut connected, mut closed) = (false, None);
            let received = &mut self.counters.received;
            inbound.clear();
            link.client.receive(now, server, &self.buffer[..n], |event| match event {
                Event::Connected(_) => connected = true,
                Event::Frame { frame, .. } => {
                    let id = frame.packet_id() as usize;
                    received[if id < received.len() { id } else { 0 }] += 1;
                    inbound.push(Received::from_frame(&frame));
                }
                Event::Closed(close) => closed = Some(close),
                _ => {}
            });
            if connected {
                bot.state = State::Playing;
                bot.connected_once = true;
            }
            for &frame in &inbound {
                self.handle(bot, index, frame, now_us);
            }
            if let Some(close) = closed {
                self.udp_closed(bot, index, close);
                break;
            }
        }
        self.inbound = inbound;
        // Acknowledgements may be owed now.
        self.transmit_udp(bot, index);
    }

    /// The client closed: refused or unanswered handshakes count as connect failures, the end of a
    /// session as a disconnect (its ERROR, if any, was counted as a frame).
    fn udp_closed(&mut self, bot: &mut Bot, index: usize, close: Close) {
        if bot.state == State::Playing {
            return self.lose_connection(bot, index);
        }
        match close {
            Close::HandshakeTimeout => self.counters.udp.handshake_timeouts += 1,
            // A refused handshake (SERVER_FULL, say) carries its code in the DISCONNECT alone.
            Close::Disconnected { code } if code != 0 => *self.counters.errors.entry(code).or_default() += 1,
            _ => {}
        }
        self.connect_failed(bot, index);
    }

    /// At the end of the run: counts the client and says goodbye, so that the server ends its
    /// session now rather than after its idle timeout (as closing a TCP socket does).
    pub(super) fn leave_udp(&mut self, bot: &mut Bot) {
        let Some(Link::Udp(link)) = &mut bot.stream else { return };
        link.client.disconnect();
        let now = self.instant(monotonic_micros());
        while let Some(len) = link.client.poll_transmit(now, &mut self.datagram) {
            let _ = link.socket.send(&self.datagram[..len]);
        }
        self.counters.udp.add(link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bots_bind_the_servers_family_and_loopback_for_loopback() {
        let local = |server: &str| local_for(server.parse().unwrap()).to_string();
        assert_eq!(local("127.0.0.1:7777"), "127.0.0.1:0");
        assert_eq!(local("[::1]:7777"), "[::1]:0");
        assert_eq!(local("192.0.2.1:7777"), "0.0.0.0:0");
        assert_eq!(local("[2001:db8::1]:7777"), "[::]:0");
    }
}
