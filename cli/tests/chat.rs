//! `bitnet chat` end to end: turns read from stdin, `/clear`, Ctrl-C (SIGINT) stopping an
//! answer without ending the chat, Ctrl-C at the idle prompt (through a pseudo-terminal, as a
//! person presses it), Ctrl-D (end of input) quitting cleanly.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::{bitnet, fixture_dir, stderr};

/// A transformers fixture converted once: a real Llama-3-style vocabulary and chat template,
/// so answers are visible text.
fn fixture_model() -> &'static Path {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = MODEL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gqa4.gguf");
        let fixture = fixture_dir("bitnet-gqa4-autobitlinear");
        let o = bitnet(&[
            "convert",
            fixture.to_str().unwrap(),
            "--outfile",
            path.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        (dir, path)
    });
    path
}

fn chat(extra: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_bitnet"))
        .args([
            "chat",
            "-m",
            fixture_model().to_str().unwrap(),
            "--temp",
            "0",
        ])
        .args(extra)
        .env("BITNET_NUM_THREADS", "2")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bitnet chat")
}

#[test]
fn turns_clear_and_end_of_input() {
    let mut child = chat(&["-n", "6", "--ignore-eos"]);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello there\n\n/clear\nHello there\n")
        .unwrap();
    // stdin is closed here: Ctrl-D.
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("(conversation cleared)"), "{stderr}");
    // Two answers, one per line; after /clear the same question gets the same greedy answer.
    let answers: Vec<&str> = stdout.lines().collect();
    assert_eq!(answers.len(), 2, "{stdout:?}");
    assert_eq!(answers[0], answers[1], "{stdout:?}");
    assert!(!answers[0].is_empty());
}

#[test]
fn ctrl_c_stops_the_answer_and_the_chat_goes_on() {
    // An answer that would run for a long time: the whole 60k-token context, EOS ignored.
    let mut child = chat(&["-n", "-1", "-c", "60000", "--ignore-eos"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Tell me everything\n").unwrap();
    stdin.flush().unwrap();
    // Wait until the answer is streaming, then interrupt it.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).expect("the answer started");
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // The chat is still alive: a second turn is answered, then end of input quits.
    stdin.write_all(b"/clear\n").unwrap();
    drop(stdin);
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("(stopped)"), "{stderr}");
    assert!(stderr.contains("(conversation cleared)"), "{stderr}");
    // Stopped well before the context was full.
    assert!(rest.len() < 50_000, "{} bytes after Ctrl-C", rest.len());
}

/// In a terminal, Ctrl-C at the empty prompt says how to quit, the half-typed line is dropped,
/// and the next answer is complete: the same as before, not `(stopped)` at once.
#[cfg(unix)]
#[test]
fn ctrl_c_at_the_prompt_does_not_reach_the_next_answer() {
    use rexpect::session::spawn_command;

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bitnet"));
    cmd.args(["chat", "-m", fixture_model().to_str().unwrap()])
        .args(["--temp", "0", "-n", "6", "--ignore-eos"])
        .env("BITNET_NUM_THREADS", "2")
        .env_remove("RUST_BACKTRACE");
    let mut p = spawn_command(cmd, Some(60_000)).expect("start bitnet chat in a pty");
    // Everything up to the next prompt; the terminal writes a newline as \r\n.
    let until_prompt = |p: &mut rexpect::session::PtySession| {
        p.exp_string("\n> ").expect("the prompt").replace('\r', "")
    };
    until_prompt(&mut p);

    p.send_line("Hello there").unwrap();
    let first = until_prompt(&mut p);
    assert!(!first.trim().is_empty(), "{first:?}");
    p.send_line("/clear").unwrap();
    assert!(until_prompt(&mut p).contains("(conversation cleared)"));

    // Half a line typed, then Ctrl-C at the idle prompt. Until the chat acknowledges it (or
    // the session's timeout passes), the next question would race with the signal.
    p.send("never sent").unwrap();
    p.flush().unwrap();
    p.send_control('c').unwrap();
    let acknowledged = p.exp_string("(Ctrl-D quits)").is_ok();
    if acknowledged {
        until_prompt(&mut p);
    }

    p.send_line("Hello there").unwrap();
    let second = until_prompt(&mut p);
    assert!(!second.contains("(stopped)"), "{second:?}");
    assert_eq!(second, first, "the same question after /clear, greedy");
    assert!(acknowledged, "no hint after Ctrl-C at the prompt");

    p.send_control('d').unwrap();
    p.exp_eof().expect("Ctrl-D quits");
    let status = p.process().wait().unwrap();
    assert!(
        matches!(status, rexpect::process::WaitStatus::Exited(_, 0)),
        "{status:?}"
    );
}
