//! `raftwerk-wal`: operator tools for a node's data directory.

use std::process::ExitCode;

const USAGE: &str = "usage: raftwerk-wal dump DIR   print segments, records, hard state and snapshot files";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [command, dir] if command == "dump" => {
            let stdout = std::io::stdout();
            match raftwerk_wal::dump::dump(&raftwerk_wal::RealFs, std::path::Path::new(dir), &mut stdout.lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::from(1)
                }
            }
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
