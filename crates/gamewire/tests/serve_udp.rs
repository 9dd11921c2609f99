//! `gamewire serve --udp` end to end: UDP bots and TCP bots at once in one world on 127.0.0.1.
// The UDP transport is served on Linux only for now.
#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::Stdio;

mod common;

use common::{GAMEWIRE, free_addr, run_bots, start_listening};

#[test]
fn udp_and_tcp_bots_play_in_one_world() {
    let addr = free_addr();
    let log = std::env::temp_dir().join(format!("gamewire-serve-udp-{}.log", std::process::id()));
    let stderr = std::fs::File::create(&log).expect("create the server log");
    // Everyone spawns at one point, so every bot sees every other whatever its transport.
    let args =
        ["serve", "--udp", "--addr", &addr.to_string(), "--spawn", "500,500", "--workers", "2", "--no-pin"];
    let _server = match start_listening(Path::new(GAMEWIRE), &args, addr, Stdio::from(stderr)) {
        Ok(server) => server,
        Err(status) => panic!(
            "gamewire serve --udp exited at start: {status}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        ),
    };
    let play = ["--bots", "10", "--warmup", "1", "--duration", "3"];
    let udp_bots =
        std::thread::spawn(move || run_bots(addr, &[&["--transport", "udp"][..], &play[..]].concat()));
    let tcp = run_bots(addr, &play);
    let udp = udp_bots.join().expect("the UDP bots' thread");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(log_text.contains("UDP transport on"), "the server says it serves UDP:\n{log_text}");

    for (transport, summary) in [("udp", &udp), ("tcp", &tcp)] {
        let context = format!("{transport}: {summary:#}");
        assert_eq!(summary["transport"], transport, "{context}");
        assert_eq!(summary["welcomed"], 10, "every bot welcomed: {context}");
        assert_eq!(summary["error_total"], 0, "{context}");
        assert_eq!(summary["disconnects"], 0, "{context}");
        assert_eq!(summary["moves_reordered"], 0, "{context}");
        assert_eq!(summary["moves_missing"], 0, "{context}");
        // The 9 others of one's own transport send at most 10 bots x 9 x 10 Hz x 3 s = 2,700 MOVEs
        // in the measured window; more means the other transport's players were seen too.
        let moves = summary["received"]["MOVE"].as_u64().unwrap_or(0);
        eprintln!("{transport}: {moves} MOVEs received");
        assert!(moves > 10 * 9 * 10 * 3, "MOVEs from both transports' players: {moves}\n{context}");
    }
    let _ = std::fs::remove_file(&log);
}
