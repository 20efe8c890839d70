//! The private PostgreSQL of `cargo xtask test`: installed from Debian's packages when
//! missing, started in a temporary directory on a free port of 127.0.0.1 (as the `postgres`
//! user when we are root: PostgreSQL refuses root), `fsync` and `synchronous_commit` on. Its
//! URL goes to the tests as `LIAISON_TEST_PG_URL`; each test makes its own database in it.
//!
//! Stopped when the [`Instance`] is dropped (the tests ended, passed or not), and also if xtask
//! dies any other way: the shell that started the server waits on a pipe from xtask and, when
//! the pipe closes, stops it and removes its directory. The same steps as
//! `liaison_server::storage::testing`, which tests run without xtask use; xtask does not build
//! the relay's crate for them.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// A running server; stopped on drop.
pub struct Instance {
    pub url: String,
    supervisor: Option<(Child, ChildStdin)>,
    dir: PathBuf,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some((mut child, mut stdin)) = self.supervisor.take() {
            let _ = stdin.write_all(b"\n");
            drop(stdin);
            let _ = child.wait();
            eprintln!("PostgreSQL for the tests stopped");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn start() -> Result<Instance> {
    let bin = bin_dir()?;
    let dir = std::env::temp_dir().join(format!("liaison-xtask-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).context("creating PostgreSQL's temporary directory")?;
    if root() {
        run(Command::new("chown").arg("postgres").arg(&dir))?;
    }
    let data = dir.join("data");
    run(as_postgres(&bin.join("initdb")).arg("-D").arg(&data).args(["-A", "trust", "-U", "postgres", "-E", "UTF8"]))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c max_connections=300",
        dir.display()
    );
    let script = r#"
        "$1" -D "$2" -l "$3" -w -o "$4" start >/dev/null || exit 1
        echo started
        read _ignored
        "$1" -D "$2" -w -m fast stop >/dev/null
        rm -rf "$5"
    "#;
    let mut child = as_postgres(Path::new("sh"))
        .args(["-c", script, "sh"])
        .arg(bin.join("pg_ctl"))
        .arg(&data)
        .arg(dir.join("log"))
        .arg(&options)
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting PostgreSQL")?;
    let stdin = child.stdin.take().context("the supervisor's stdin")?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        BufReader::new(stdout).read_line(&mut line)?;
    }
    let instance = Instance {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        supervisor: Some((child, stdin)),
        dir: dir.clone(),
    };
    if line.trim() != "started" {
        let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        bail!("PostgreSQL did not start:\n{log}");
    }
    eprintln!("PostgreSQL for the tests on 127.0.0.1:{port}");
    Ok(instance)
}

/// `cargo xtask postgres`: an instance until Enter (or end of input).
pub fn until_enter() -> Result<()> {
    let instance = start()?;
    println!("LIAISON_TEST_PG_URL={}", instance.url);
    println!("press Enter to stop it");
    let _ = std::io::stdin().read_line(&mut String::new());
    Ok(())
}

/// The newest `/usr/lib/postgresql/VERSION/bin`, installing `postgresql` if there is none.
fn bin_dir() -> Result<PathBuf> {
    if let Some(found) = find_bin_dir() {
        return Ok(found);
    }
    crate::run("apt-get", &["update"], None)?;
    crate::run("apt-get", &["install", "-y", "postgresql"], None)?;
    find_bin_dir().context("apt-get installed postgresql, but no /usr/lib/postgresql/*/bin/initdb")
}

fn find_bin_dir() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
}

fn root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().any(|l| l.strip_prefix("Uid:").and_then(|ids| ids.split_whitespace().next()) == Some("0"))
    })
}

fn as_postgres(program: &Path) -> Command {
    if root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.stdout(Stdio::null()).output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
