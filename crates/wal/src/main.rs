//! `raftwerk-wal`: operator tools for a node's data directory.

use std::process::ExitCode;

const USAGE: &str = "\
usage:
  raftwerk-wal dump DIR            print segments, records, hard state and snapshot files
  raftwerk-wal bench [DIR] [--quick]
                                   append throughput with fdatasync beside the raw disk,
                                   and recovery time (DIR defaults to the temp directory)";

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
        [command, entry_bytes, batch, batches] if command == "bench-shape" => {
            let number = |text: &String| text.parse::<u64>().unwrap_or(0);
            let base = std::env::temp_dir().join("raftwerk-wal-bench");
            let result = raftwerk_wal::bench::append_shape(
                &base,
                number(entry_bytes) as usize,
                number(batch) as usize,
                number(batches),
            );
            println!(
                "wal {:?} raw {:?} syncs/batch {:.2}",
                result.wal, result.raw, result.syncs_per_batch
            );
            let _ = std::fs::remove_dir_all(&base);
            ExitCode::SUCCESS
        }
        [command, rest @ ..] if command == "bench" && rest.len() <= 2 => {
            let quick = rest.iter().any(|arg| arg == "--quick");
            let dirs: Vec<&String> = rest.iter().filter(|arg| *arg != "--quick").collect();
            if dirs.len() > 1 {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
            let base = dirs
                .first()
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| std::env::temp_dir().join("raftwerk-wal-bench"));
            raftwerk_wal::bench::run(&base, quick);
            let _ = std::fs::remove_dir_all(&base);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
