//! A PostgreSQL server of a test's own, for fault tests that restart or stop the server
//! without disturbing the shared one ([`crate::database`]) every other test uses.
//!
//! `initdb` makes a cluster in a fresh temporary folder (trust authentication, superuser
//! `postgres`), and `pg_ctl` runs it on a free 127.0.0.1 port with its Unix socket in
//! the same folder. PostgreSQL refuses to run as root, so under root both programs run
//! as the `postgres` system user (`runuser -u postgres --`), which then owns the folder.

use std::ffi::OsStr;
use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use diesel::{Connection as _, PgConnection, RunQueryDsl as _};

/// The variable naming the folder of `initdb`, `pg_ctl` and `postgres`, when they are
/// not where Debian puts them.
pub const BINDIR_VARIABLE: &str = "KUBERNAUT_TEST_PG_BINDIR";

/// Where Debian installs each PostgreSQL version's programs (`15/bin`, `16/bin`...).
const DEBIAN_VERSIONS_FOLDER: &str = "/usr/lib/postgresql";

/// The system user PostgreSQL runs as when the tests run as root.
const SYSTEM_USER: &str = "postgres";

/// How often [`PostgresServer::start`] tries another port when the one it picked was
/// taken between picking and binding (by another test picking at the same time).
const PORT_ATTEMPTS: usize = 3;

/// Why the server could not be set up, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum PostgresServerError {
    /// No folder with `initdb` and `pg_ctl` was found: tests should say they skip.
    #[error(
        "no PostgreSQL programs found (set {BINDIR_VARIABLE}, or install them under \
         {DEBIAN_VERSIONS_FOLDER}/<version>/bin or on the PATH of pg_config): {searched}"
    )]
    BinariesNotFound {
        /// Where they were looked for.
        searched: String,
    },
    /// The temporary folder, a port or a program could not be had.
    #[error("could not {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A PostgreSQL program ran and failed.
    #[error("{command} failed ({status}): {output}")]
    Command {
        command: String,
        status: std::process::ExitStatus,
        /// What it printed, and the server's log when the server was starting.
        output: String,
    },
    /// The server did not accept a connection or a statement.
    #[error("the test server refused {what}")]
    Database {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl PostgresServerError {
    /// Whether the PostgreSQL programs are missing, so that a test skips rather than
    /// fails.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::BinariesNotFound { .. })
    }
}

/// A running PostgreSQL cluster in a temporary folder. Dropping it stops the server
/// (immediate mode) and deletes the folder.
pub struct PostgresServer {
    programs: Programs,
    port: u16,
    data: PathBuf,
    // Dropped after the server is stopped (fields drop after `Drop::drop`).
    folder: tempfile::TempDir,
}

impl fmt::Debug for PostgresServer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PostgresServer")
            .field("port", &self.port)
            .field("folder", &self.folder.path())
            .field("bindir", &self.programs.bindir)
            .finish_non_exhaustive()
    }
}

impl PostgresServer {
    /// Makes a cluster in a fresh temporary folder and starts it on a free port.
    /// Blocking (a few seconds: `initdb` is most of it).
    ///
    /// # Errors
    /// [`PostgresServerError::BinariesNotFound`] without PostgreSQL's programs, others
    /// when `initdb` or `pg_ctl` fail.
    pub fn start() -> Result<Self, PostgresServerError> {
        let bindir = find_bindir()?;
        let folder = tempfile::Builder::new()
            .prefix("kubernaut-pg-")
            .tempdir()
            .map_err(io("create a temporary folder"))?;
        let programs = Programs::for_folder(bindir, folder.path())?;
        let data = folder.path().join("data");
        programs.run(
            "initdb",
            &[
                OsStr::new("--auth=trust"),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("--encoding=UTF8"),
                OsStr::new("--locale=C"),
                // Nothing here has to survive a crash of the machine.
                OsStr::new("--no-sync"),
                OsStr::new("-D"),
                data.as_os_str(),
            ],
            folder.path(),
        )?;
        let mut server = Self {
            programs,
            port: 0,
            data,
            folder,
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            server.port = free_port()?;
            match server.pg_ctl_start() {
                Ok(()) => return Ok(server),
                Err(error) if attempts < PORT_ATTEMPTS && server.port_was_taken() => {
                    tracing::debug!(%error, "the picked port was taken; trying another");
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The URL of the `postgres` database as the superuser `postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of `database` on this server as the superuser `postgres`. The name goes
    /// into the URL as it is: keep it to letters, digits and underscores.
    pub fn url_for(&self, database: &str) -> String {
        crate::database::without_gss_encryption(&format!(
            "postgres://postgres@127.0.0.1:{}/{database}",
            self.port
        ))
    }

    /// The TCP port on 127.0.0.1 the server listens on; it stays the same across
    /// [`Self::stop`], [`Self::start_again`] and [`Self::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates the database `name` and returns its URL. Blocking.
    ///
    /// # Errors
    /// [`PostgresServerError::Database`] when the server is down or refuses.
    pub fn create_database(&self, name: &str) -> Result<String, PostgresServerError> {
        let mut connection = PgConnection::establish(&self.url()).map_err(|source| {
            PostgresServerError::Database {
                what: "a connection".to_owned(),
                source: Box::new(source),
            }
        })?;
        diesel::sql_query(format!("CREATE DATABASE {}", quote_identifier(name)))
            .execute(&mut connection)
            .map_err(|source| PostgresServerError::Database {
                what: format!("to create the database {name}"),
                source: Box::new(source),
            })?;
        Ok(self.url_for(name))
    }

    /// Stops the server in fast mode (open connections are ended, nothing waits for
    /// clients to leave) and waits until it is down. Blocking.
    ///
    /// # Errors
    /// When `pg_ctl stop` fails, as when the server is not running.
    pub fn stop(&self) -> Result<(), PostgresServerError> {
        self.pg_ctl(&["stop", "-m", "fast", "-w"].map(OsStr::new))
            .map(drop)
    }

    /// Starts the stopped server again on the same port and waits until it accepts
    /// connections. Blocking.
    ///
    /// # Errors
    /// When `pg_ctl start` fails, as when another process took the port meanwhile.
    pub fn start_again(&self) -> Result<(), PostgresServerError> {
        self.pg_ctl_start()
    }

    /// Stops the server in fast mode and starts it again on the same port, as
    /// `pg_ctlcluster ... restart` does: every open connection is ended. Blocking.
    ///
    /// # Errors
    /// When `pg_ctl restart` fails.
    pub fn restart(&self) -> Result<(), PostgresServerError> {
        let options = self.server_options();
        let log = self.log_path();
        self.pg_ctl(&[
            OsStr::new("restart"),
            OsStr::new("-m"),
            OsStr::new("fast"),
            OsStr::new("-w"),
            OsStr::new("-o"),
            OsStr::new(&options),
            OsStr::new("-l"),
            log.as_os_str(),
        ])
        .map(drop)
    }

    /// Whether the server is running (`pg_ctl status`). Blocking.
    pub fn is_running(&self) -> bool {
        self.pg_ctl(&[OsStr::new("status")]).is_ok()
    }

    fn pg_ctl_start(&self) -> Result<(), PostgresServerError> {
        let options = self.server_options();
        let log = self.log_path();
        self.pg_ctl(&[
            OsStr::new("start"),
            OsStr::new("-w"),
            OsStr::new("-o"),
            OsStr::new(&options),
            OsStr::new("-l"),
            log.as_os_str(),
        ])
        .map(drop)
        .map_err(|error| self.with_log(error))
    }

    fn pg_ctl(&self, arguments: &[&OsStr]) -> Result<Output, PostgresServerError> {
        let mut all = vec![OsStr::new("-D"), self.data.as_os_str()];
        all.extend_from_slice(arguments);
        self.programs.run("pg_ctl", &all, self.folder.path())
    }

    /// The postmaster's options. `pg_ctl` hands them to a shell, hence the quotes
    /// around the socket folder.
    fn server_options(&self) -> String {
        format!(
            "-p {} -k '{}' -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off",
            self.port,
            self.folder.path().display()
        )
    }

    fn log_path(&self) -> PathBuf {
        self.folder.path().join("postgres.log")
    }

    /// Whether the server's log says the port was in use, the one failure that another
    /// port cures.
    fn port_was_taken(&self) -> bool {
        std::fs::read_to_string(self.log_path())
            .is_ok_and(|log| log.contains("Address already in use"))
    }

    /// `error` with the end of the server's log, which says why a start failed.
    fn with_log(&self, error: PostgresServerError) -> PostgresServerError {
        let PostgresServerError::Command {
            command,
            status,
            output,
        } = error
        else {
            return error;
        };
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        PostgresServerError::Command {
            command,
            status,
            output: format!("{output}\nserver log:\n{}", tail.join("\n")),
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // Best effort, and quiet: the server may already be stopped, and the folder
        // goes with `self.folder` right after.
        if self.is_running() {
            let stopped = self.pg_ctl(&["stop", "-m", "immediate", "-w"].map(OsStr::new));
            if let Err(error) = stopped {
                eprintln!("could not stop the test PostgreSQL server: {error}");
            }
        }
    }
}

/// The PostgreSQL programs and who runs them.
#[derive(Debug)]
struct Programs {
    bindir: PathBuf,
    /// Under root: run them as [`SYSTEM_USER`] through `runuser`.
    as_system_user: bool,
}

impl Programs {
    /// Decides who runs the programs, from who owns the freshly made `folder` (its
    /// owner is the effective user), and under root hands the folder to
    /// [`SYSTEM_USER`].
    fn for_folder(bindir: PathBuf, folder: &Path) -> Result<Self, PostgresServerError> {
        use std::os::unix::fs::MetadataExt as _;

        let owner = std::fs::metadata(folder)
            .map_err(io("read the temporary folder's owner"))?
            .uid();
        let as_system_user = owner == 0;
        if as_system_user {
            let user_and_group = format!("{SYSTEM_USER}:");
            run(
                Command::new("chown")
                    .arg(&user_and_group)
                    .arg(folder)
                    .current_dir(folder),
                "chown",
            )?;
        }
        Ok(Self {
            bindir,
            as_system_user,
        })
    }

    /// Runs `program` of the bindir with `arguments` in `folder` (the system user may
    /// not be allowed into the caller's working directory).
    fn run(
        &self,
        program: &str,
        arguments: &[&OsStr],
        folder: &Path,
    ) -> Result<Output, PostgresServerError> {
        let path = self.bindir.join(program);
        let mut command = if self.as_system_user {
            let mut command = Command::new("runuser");
            command.args(["-u", SYSTEM_USER, "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        command.args(arguments).current_dir(folder);
        run(&mut command, program)
    }
}

/// Runs `command` to its end, its output captured; a failure carries that output.
fn run(command: &mut Command, name: &str) -> Result<Output, PostgresServerError> {
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(io(format!("run {name}")))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(PostgresServerError::Command {
            command: format!("{command:?}"),
            status: output.status,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

/// The first folder holding `initdb` and `pg_ctl`: [`BINDIR_VARIABLE`], else the newest
/// Debian version, else `pg_config --bindir`.
fn find_bindir() -> Result<PathBuf, PostgresServerError> {
    find_bindir_from(std::env::var_os(BINDIR_VARIABLE))
}

/// [`find_bindir`] given the value of [`BINDIR_VARIABLE`].
fn find_bindir_from(named: Option<std::ffi::OsString>) -> Result<PathBuf, PostgresServerError> {
    let has_programs =
        |folder: &Path| folder.join("initdb").is_file() && folder.join("pg_ctl").is_file();
    if let Some(folder) = named {
        let folder = PathBuf::from(folder);
        // Named on purpose: not silently replaced by another version.
        return if has_programs(&folder) {
            Ok(folder)
        } else {
            Err(PostgresServerError::BinariesNotFound {
                searched: format!("{BINDIR_VARIABLE}={}", folder.display()),
            })
        };
    }
    let newest_debian = std::fs::read_dir(DEBIAN_VERSIONS_FOLDER)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = version_number(&entry.file_name().to_string_lossy())?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bindir)| has_programs(bindir))
        .max_by_key(|(version, _)| *version);
    if let Some((_, bindir)) = newest_debian {
        return Ok(bindir);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
        .filter(|bindir| has_programs(bindir));
    from_pg_config.ok_or_else(|| PostgresServerError::BinariesNotFound {
        searched: format!("{DEBIAN_VERSIONS_FOLDER}/*/bin, pg_config --bindir"),
    })
}

/// `15` of Debian's `15`, `9.6` as `(9, 6)`; `None` for other names.
fn version_number(name: &str) -> Option<(u32, u32)> {
    let (major, minor) = name.split_once('.').unwrap_or((name, "0"));
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, PostgresServerError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("find a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io("read the free port"))?
        .port())
}

/// `name` as a quoted SQL identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PostgresServerError {
    let what = what.into();
    move |source| PostgresServerError::Io { what, source }
}

#[cfg(test)]
mod tests {
    use diesel::sql_types::Integer;

    use super::*;

    #[derive(diesel::QueryableByName)]
    struct One {
        #[diesel(sql_type = Integer)]
        one: i32,
    }

    /// A server of the test's own, or `None` (said on stderr) without PostgreSQL.
    fn server() -> Option<PostgresServer> {
        match PostgresServer::start() {
            Ok(server) => Some(server),
            Err(error) if error.is_unavailable() && std::env::var_os("CI").is_none() => {
                eprintln!("skipped: {error}");
                None
            }
            Err(error) => panic!("the test server starts: {error}"),
        }
    }

    fn select_one(url: &str) -> Result<i32, String> {
        let mut connection = PgConnection::establish(url).map_err(|error| error.to_string())?;
        diesel::sql_query("SELECT 1 AS one")
            .get_result::<One>(&mut connection)
            .map(|row| row.one)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn a_started_server_answers_on_its_port_and_creates_databases() {
        let Some(server) = server() else { return };

        assert!(server.is_running());
        assert_eq!(
            server.url(),
            format!(
                "postgres://postgres@127.0.0.1:{}/postgres?gssencmode=disable",
                server.port()
            )
        );
        let url = server
            .create_database("fault_test")
            .expect("the database is created");
        assert_eq!(url, server.url_for("fault_test"));
        assert_eq!(select_one(&url), Ok(1));
    }

    #[test]
    fn a_restart_ends_open_connections_and_the_server_answers_again() {
        let Some(server) = server() else { return };
        let mut before = PgConnection::establish(&server.url()).expect("a connection");

        server.restart().expect("the server restarts");

        assert!(server.is_running());
        let on_the_old_connection =
            diesel::sql_query("SELECT 1 AS one").get_result::<One>(&mut before);
        assert!(on_the_old_connection.is_err(), "the restart ended it");
        assert_eq!(select_one(&server.url()), Ok(1));
    }

    #[test]
    fn a_stopped_server_refuses_connections_until_started_again() {
        let Some(server) = server() else { return };

        server.stop().expect("the server stops");
        assert!(!server.is_running());
        assert!(select_one(&server.url()).is_err());

        server.start_again().expect("the server starts again");
        assert!(server.is_running());
        assert_eq!(select_one(&server.url()), Ok(1));
    }

    #[test]
    fn dropping_the_server_stops_it_and_deletes_its_folder() {
        let Some(server) = server() else { return };
        let folder = server.folder.path().to_owned();
        let url = server.url();
        assert!(folder.join("data").join("PG_VERSION").is_file());

        drop(server);

        assert!(!folder.exists(), "{} is gone", folder.display());
        assert!(select_one(&url).is_err(), "nothing listens on the port");
    }

    #[test]
    fn a_named_folder_without_the_programs_is_unavailable_rather_than_replaced() {
        let empty = tempfile::tempdir().expect("a folder");

        let error = find_bindir_from(Some(empty.path().as_os_str().to_owned()))
            .expect_err("no programs there");

        assert!(error.is_unavailable(), "{error}");
        assert!(error.to_string().contains(BINDIR_VARIABLE), "{error}");
    }

    #[test]
    fn identifiers_are_quoted_and_versions_ordered() {
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(version_number("15"), Some((15, 0)));
        assert_eq!(version_number("9.6"), Some((9, 6)));
        assert_eq!(version_number("bin"), None);
        assert!(version_number("16") > version_number("9.6"));
    }
}
