//! Two servers on one address: the second is refused with "address in use" unless it asks to join
//! (`ServerConfig::reuse_port`), however many workers either has; the workers of one server always
//! share their port.

mod util;

use std::io;

use gamewire_net::{Server, ServerError};
use util::{TestServer, base_rules, each_backend};

#[test]
fn a_second_server_on_a_taken_address_is_refused() {
    each_backend(|config| {
        let first = TestServer::start(config.clone());
        for workers in [1, 2] {
            let second = config.clone().addr(first.addr()).workers(workers);
            match Server::bind(second, base_rules()) {
                Err(ServerError::Bind { addr, error }) => {
                    assert_eq!(addr, first.addr());
                    assert_eq!(error.kind(), io::ErrorKind::AddrInUse, "{error}");
                }
                Err(error) => panic!("{workers} worker(s): the wrong error: {error}"),
                Ok(server) => panic!(
                    "{workers} worker(s): a second server bound {} beside the first",
                    server.local_addr()
                ),
            }
        }
        // The refusals cost the first nothing.
        let mut alice = first.join("alice");
        alice.assert_served();
    });
}

#[test]
fn servers_that_ask_to_join_share_the_port() {
    each_backend(|mut config| {
        config.reuse_port = true;
        let first = TestServer::start(config.clone());
        for workers in [1, 2] {
            let second = TestServer::start(config.clone().addr(first.addr()).workers(workers));
            assert_eq!(second.addr(), first.addr());
            // Whichever server the kernel hands it to serves it.
            let mut bob = second.join("bob");
            bob.assert_served();
        }
    });
}

#[test]
fn port_zero_gives_every_worker_one_fresh_port() {
    each_backend(|config| {
        // Port 0 (the tests' address): the probe picks the port, every worker listens on it, and
        // clients reach the server there.
        let server = TestServer::start(config);
        assert_ne!(server.addr().port(), 0);
        let mut carol = server.join("carol");
        carol.assert_served();
    });
}
