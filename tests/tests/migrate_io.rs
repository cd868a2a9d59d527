//! Files and stdin across migrations: a program appending to a file it
//! opened before the move (O_APPEND) while reading another one record by
//! record, and `cat` fed lines by the test before, during and after each
//! move: nothing lost, nothing repeated, in order.

use popcorn_tests::migrate::{assert_counts, cluster, migrate_ok, wait_pid, Client};
use popcorn_tests::program;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn appended_file_and_stdin_are_complete_and_in_order() {
    let c = cluster("mgio", 2);

    // A file appended to and a file read, both opened before the moves.
    let dir = std::env::temp_dir().join(format!("popcorn-mgio-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (out, input) = (dir.join("out.txt"), dir.join("in.txt"));
    const COUNT: usize = 200;
    let records: String = (0..COUNT).map(|i| format!("{i:07}\n")).collect();
    std::fs::write(&input, records).unwrap();
    std::fs::write(&out, "header\n").unwrap();
    let prog = program("mig_append");
    let started = Instant::now();
    let mut run = Client::run(
        &c,
        "a",
        &[
            prog.to_str().unwrap(),
            &COUNT.to_string(),
            out.to_str().unwrap(),
            input.to_str().unwrap(),
        ],
    );
    run.wait_for("count 0", Duration::from_secs(20));
    let pid = wait_pid(&c, "a", "mig_append");
    for (at, to) in [(40, "b"), (110, "a"), (160, "b")] {
        run.wait_for(&format!("count {at}"), Duration::from_secs(20));
        migrate_ok(&c, "a", pid, to);
    }
    let done = run.finish(Duration::from_secs(30));
    eprintln!("append: {:?}", started.elapsed());
    assert_eq!(
        done.status.code(),
        Some(0),
        "{:?} {}",
        done.lines,
        done.stderr
    );
    assert_counts(&done.lines, COUNT);
    assert_eq!(done.lines.last().map(String::as_str), Some("done"));
    let want: String = std::iter::once("header\n".to_owned())
        .chain((0..COUNT).map(|i| format!("line {i}\n")))
        .collect();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), want);
    let _ = std::fs::remove_dir_all(&dir);

    // `cat` reading stdin while the test writes to it throughout.
    let started = Instant::now();
    let mut run = Client::run(&c, "a", &["cat"]);
    let mut stdin = run.take_stdin();
    const LINES: usize = 300;
    stdin.write_all(b"input 0\n").unwrap();
    run.wait_for("input 0", Duration::from_secs(20));
    let pid = wait_pid(&c, "a", "cat");
    let writer = std::thread::spawn(move || {
        for i in 1..LINES {
            stdin.write_all(format!("input {i}\n").as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        // Dropping stdin: end of file after the last line.
    });
    for to in ["b", "a", "b"] {
        std::thread::sleep(Duration::from_millis(300));
        migrate_ok(&c, "a", pid, to);
    }
    writer.join().unwrap();
    let done = run.finish(Duration::from_secs(30));
    eprintln!("stdin: {:?}", started.elapsed());
    let want: Vec<String> = (0..LINES).map(|i| format!("input {i}")).collect();
    assert_eq!(done.lines, want, "stderr: {}", done.stderr);
    assert_eq!(done.status.code(), Some(0), "stderr: {}", done.stderr);
}
