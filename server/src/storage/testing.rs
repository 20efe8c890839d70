//! A private PostgreSQL for tests (feature `testing`).
//!
//! `cargo xtask test` starts one instance for the whole run and exports its URL as
//! `LIAISON_TEST_PG_URL`; a test run without it (plain `cargo test`) starts its own here, the
//! same way, instead of passing without a database: a test that cannot fail is a defect. Each
//! test then makes its own database ([`fresh_database`]), so tests run in parallel.
//!
//! The instance: Debian's `postgresql` (installed with apt-get when `/usr/lib/postgresql/*/bin/
//! initdb` is missing), a temporary directory, a free port on 127.0.0.1, `fsync` and
//! `synchronous_commit` on. PostgreSQL refuses to run as root, and CI runs as root: then the
//! server runs as the `postgres` user. It is stopped when its [`PrivatePostgres`] is dropped,
//! and also when the test process dies any other way: the shell that started it waits on a
//! pipe from this process and, when the pipe closes, stops the server and removes its directory.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result, bail};

/// The environment variable `cargo xtask test` sets to a running instance's admin URL.
pub const URL_VAR: &str = "LIAISON_TEST_PG_URL";

/// A PostgreSQL server in a temporary directory, stopped on drop.
#[derive(Debug)]
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// The supervising shell and the pipe it waits on.
    supervisor: Option<(Child, ChildStdin)>,
}

impl PrivatePostgres {
    /// Installs PostgreSQL if needed, makes a cluster and starts it.
    pub fn start() -> Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("liaison-pg-").tempdir().context("temporary directory")?;
        if running_as_root() {
            run(Command::new("chown").arg("postgres").arg(dir.path()))?;
        }
        let data = dir.path().join("data");
        run(as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8"]))?;
        let port = free_port()?;
        let mut me = Self { bin, dir, port, supervisor: None };
        me.supervise()?;
        Ok(me)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`: the superuser, on the `postgres` database.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m fast`: every connection is cut, then the server accepts new ones.
    pub fn restart_fast(&self) -> Result<()> {
        run(self.pg_ctl().args(["restart", "-m", "fast", "-w", "-o", &self.options()]))
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The instance's data directory (`postmaster.pid` is there: the benchmark measures the
    /// postmaster's process tree).
    pub fn data_directory(&self) -> PathBuf {
        self.data()
    }

    fn options(&self) -> String {
        format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c max_connections=300",
            self.port,
            self.dir.path().display()
        )
    }

    fn pg_ctl(&self) -> Command {
        let mut cmd = as_postgres(&self.bin.join("pg_ctl"));
        cmd.arg("-D").arg(self.data()).arg("-l").arg(self.dir.path().join("log"));
        cmd
    }

    /// Starts the server under a shell that stops it once stdin closes.
    fn supervise(&mut self) -> Result<()> {
        let pg_ctl = self.bin.join("pg_ctl");
        let script = r#"
            "$1" -D "$2" -l "$3" -w -o "$4" start >/dev/null || exit 1
            echo started
            read _ignored
            "$1" -D "$2" -w -m fast stop >/dev/null
            rm -rf "$5"
        "#;
        let mut child = as_postgres(Path::new("sh"))
            .args(["-c", script, "sh"])
            .arg(&pg_ctl)
            .arg(self.data())
            .arg(self.dir.path().join("log"))
            .arg(self.options())
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting PostgreSQL")?;
        let stdin = child.stdin.take().context("the supervisor's stdin")?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            BufReader::new(stdout).read_line(&mut line).context("waiting for PostgreSQL")?;
        }
        if line.trim() != "started" {
            let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
            bail!("PostgreSQL did not start:\n{log}");
        }
        self.supervisor = Some((child, stdin));
        Ok(())
    }

    /// `pg_ctl stop -m fast`: the server is down until [`PrivatePostgres::start_again`].
    pub fn stop_fast(&self) -> Result<()> {
        run(self.pg_ctl().args(["stop", "-m", "fast", "-w"]))
    }

    pub fn start_again(&self) -> Result<()> {
        run(self.pg_ctl().args(["start", "-w", "-o", &self.options()]))
    }

    /// Turns TLS on with this certificate chain and key (PEM), without a restart.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        for (name, text) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = self.data().join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {name}"))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            if running_as_root() {
                run(Command::new("chown").arg("postgres").arg(&path))?;
            }
        }
        psql(&self.admin_url(), "ALTER SYSTEM SET ssl = on")?;
        psql(&self.admin_url(), "SELECT pg_reload_conf()")
    }

    /// Creates a database of its own for one test; returns its URL.
    pub fn fresh_database(&self) -> Result<String> {
        fresh_database_at(&self.admin_url())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if let Some((mut child, mut stdin)) = self.supervisor.take() {
            let _ = stdin.write_all(b"\n");
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// The instance of this test process: `LIAISON_TEST_PG_URL`'s, or one started on first use.
pub fn admin_url() -> Result<String> {
    static OWN: OnceLock<std::result::Result<PrivatePostgres, String>> = OnceLock::new();
    if let Ok(url) = std::env::var(URL_VAR) {
        return Ok(url);
    }
    // Never dropped (statics are not): the supervisor's pipe closes when the process exits.
    match OWN.get_or_init(|| PrivatePostgres::start().map_err(|e| format!("{e:#}"))) {
        Ok(own) => Ok(own.admin_url()),
        Err(e) => bail!("no {URL_VAR} and no private PostgreSQL: {e}"),
    }
}

/// A new, empty database on this process's instance (see [`admin_url`]); returns its URL.
pub fn fresh_database() -> Result<String> {
    fresh_database_at(&admin_url()?)
}

fn fresh_database_at(admin_url: &str) -> Result<String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let name = format!("liaison_t{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
    psql(admin_url, &format!("CREATE DATABASE {name}"))?;
    let (server, _) = admin_url.rsplit_once('/').context("the admin URL names no database")?;
    Ok(format!("{server}/{name}"))
}

/// Runs `sql` with psql against the database at `url`.
pub fn psql(url: &str, sql: &str) -> Result<()> {
    run(Command::new("psql").arg(url).args(["-q", "-v", "ON_ERROR_STOP=1", "-c", sql]))
}

/// The newest `/usr/lib/postgresql/VERSION/bin`, installing Debian's `postgresql` if none.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(found) = find_bin_dir() {
        return Ok(found);
    }
    if !running_as_root() {
        bail!("PostgreSQL is not installed: apt-get install postgresql (or run `cargo xtask test` as root)");
    }
    run(Command::new("apt-get").arg("update").stdout(Stdio::null()))?;
    run(Command::new("apt-get").args(["install", "-y", "postgresql"]).stdout(Stdio::null()))?;
    find_bin_dir().context("apt-get installed postgresql, but no /usr/lib/postgresql/*/bin/initdb")
}

fn find_bin_dir() -> Option<PathBuf> {
    let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    versions
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().any(|l| l.strip_prefix("Uid:").and_then(|ids| ids.split_whitespace().next()) == Some("0"))
    })
}

/// `program` run as the `postgres` user when we are root (PostgreSQL refuses root).
fn as_postgres(program: &Path) -> Command {
    if running_as_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.stdout(Stdio::null()).output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
