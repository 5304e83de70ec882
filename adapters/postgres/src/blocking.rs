//! Running diesel's blocking calls off the async executor, on threads of our own, with
//! one way of reporting their failures.
//!
//! Each pooled connection has one thread (`kubernaut-db-N`) that takes queries from a
//! shared queue, checks a connection out of the r2d2 pool, runs the query and hands the
//! answer back through a oneshot channel. Under load the queue is seldom empty, so a
//! thread goes from one query to the next without sleeping in between, and there are no
//! more threads than connections: no thread waits on the pool for a connection another
//! holds. With tokio's blocking pool every query woke a thread and put it back to
//! sleep, and the extra context switches cost the GET by id more than all its own
//! instructions (docs/performance.md).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::PgConnection;
use diesel::r2d2::{Pool, PooledConnection};
use kubernaut_domain::ports::RepositoryError;
use tokio::sync::oneshot;

use crate::database::{PgConnectionManager, PgPool, ensure_open};

/// The pool a database thread checks its connections out of.
type Connections = Pool<PgConnectionManager>;

/// Work for a database thread, given the pool it checks its connection out of.
type Job = Box<dyn FnOnce(&Connections) + Send>;

/// The sending end of the database threads' queue; the threads end when every sender
/// is gone.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    jobs: flume::Sender<Job>,
    /// How long a job may wait for a free thread before it fails as "no database
    /// connection is available" (the pool's connection timeout).
    wait_limit: Duration,
}

impl Queue {
    /// Starts one thread per connection of `connections` and returns their queue.
    ///
    /// # Errors
    /// When the operating system refuses to start a thread.
    ///
    /// The threads hold the pool weakly: when every [`PgPool`] is gone the pool closes
    /// its connections on the thread that dropped the last one, and the threads end.
    /// (Were a thread the last owner, it could be closing TLS connections while the
    /// process exits and OpenSSL cleans up: a crash at exit.)
    pub(crate) fn start(
        connections: &Arc<Connections>,
        wait_limit: Duration,
    ) -> std::io::Result<Self> {
        let (jobs, queued) = flume::unbounded::<Job>();
        for number in 0..connections.max_size() {
            let queued = queued.clone();
            let connections = Arc::downgrade(connections);
            std::thread::Builder::new()
                .name(format!("kubernaut-db-{number}"))
                .spawn(move || {
                    for job in queued {
                        // Gone: the job is dropped, so its caller hears it did not run.
                        let Some(pool) = connections.upgrade() else {
                            return;
                        };
                        job(&pool);
                    }
                })?;
        }
        Ok(Self { jobs, wait_limit })
    }
}

/// Runs `work` with a connection from `pool` on one of the database threads.
///
/// For writes, and for anything that must not run twice: when the connection dies
/// under `work` the error goes to the caller, who alone knows whether trying again is
/// safe (the server may have committed before it went away).
pub(crate) async fn with_connection<T, E, F>(pool: &PgPool, work: F) -> Result<T, E>
where
    F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<RepositoryError> + Send + 'static,
{
    on_a_database_thread(pool, move |connections| {
        let mut connection = check_out(connections)?;
        work(&mut connection)
    })
    .await
}

/// Runs the read-only `work` with a connection from `pool` on one of the database
/// threads, and once more on a fresh connection when the first one turns out to have
/// been closed under it.
///
/// Checkout skips connections the server has closed, but one can still die between
/// checkout and query (a restart at that moment). Whether the server ran the query
/// before it went away cannot be known, so only work that changes nothing is tried
/// again: running a read twice is harmless. `work` must not write.
pub(crate) async fn with_connection_read<T, E, F>(pool: &PgPool, work: F) -> Result<T, E>
where
    F: Fn(&mut PgConnection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<RepositoryError> + Send + 'static,
{
    on_a_database_thread(pool, move |connections| {
        let mut connection = check_out(connections)?;
        let first = work(&mut connection);
        // Only a failure is looked into: the success path costs nothing more.
        if first.is_err() && ensure_open(&mut connection).is_err() {
            // Returned to the pool, the closed connection is discarded (`has_broken`).
            drop(connection);
            tracing::info!("the database connection closed under a read; reading again");
            let mut connection = check_out(connections)?;
            return work(&mut connection);
        }
        first
    })
    .await
}

fn check_out(
    connections: &Connections,
) -> Result<PooledConnection<PgConnectionManager>, RepositoryError> {
    connections
        .get()
        .map_err(|error| RepositoryError::unavailable("no database connection is available", error))
}

/// Runs `job` on one of the database threads and hands back its answer.
async fn on_a_database_thread<T, E, F>(pool: &PgPool, job: F) -> Result<T, E>
where
    F: FnOnce(&Connections) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<RepositoryError> + Send + 'static,
{
    let (answer, answered) = oneshot::channel::<Result<T, E>>();
    let queued_at = Instant::now();
    let wait_limit = pool.queue().wait_limit;
    let job: Job = Box::new(move |connections| {
        if answer.is_closed() {
            return; // The caller went away (its request was dropped): skip the query.
        }
        let waited = queued_at.elapsed();
        let result = if waited > wait_limit {
            Err(RepositoryError::unavailable(
                "no database connection is available",
                format!("every connection stayed busy for {} ms", waited.as_millis()),
            )
            .into())
        } else {
            // A panic in `job` must not end the thread: the caller gets an error instead
            // and the thread takes the next job. The connection is not reused: diesel's
            // r2d2 manager counts a connection returned while panicking as broken.
            catch_unwind(AssertUnwindSafe(|| job(connections)))
                .unwrap_or_else(|_| Err(RepositoryError::new("the database task panicked").into()))
        };
        // The caller may have gone away meanwhile; then nobody wants the answer.
        let _ = answer.send(result);
    });
    pool.queue()
        .jobs
        .send(job)
        .map_err(|_| RepositoryError::new("the database threads have stopped"))?;
    answered
        .await
        .map_err(|error| RepositoryError::caused_by("the database task did not finish", error))?
}

/// Turns a diesel error into a [`RepositoryError`] saying what failed.
pub(crate) fn query_failed(
    what: &'static str,
) -> impl FnOnce(diesel::result::Error) -> RepositoryError {
    move |error| match error {
        // The connection went away under the query: the server is restarting or gone.
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ClosedConnection
            | diesel::result::DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => RepositoryError::unavailable(format!("{what} failed"), error),
        error => RepositoryError::caused_by(format!("{what} failed"), error),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use diesel::sql_types::{BigInt, Text};
    use diesel::{RunQueryDsl as _, sql_query};
    use kubernaut_testkit::database::TestDatabase;

    use super::*;
    use crate::database::{Database, PoolOptions};

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        count: i64,
    }

    /// A database with one connection (so one database thread) whose connection
    /// timeout is `wait_limit`, and a table `marks` to write to.
    fn one_connection(wait_limit: Duration) -> (Database, TestDatabase) {
        let test_database = TestDatabase::create().expect("a fresh test database");
        let database = Database::connect(
            test_database.url(),
            PoolOptions {
                max_size: 1,
                connection_timeout: wait_limit,
            },
        )
        .expect("a pool on the test database");
        let mut connection = database.pool().get().expect("a connection");
        sql_query("CREATE TABLE marks (mark text NOT NULL)")
            .execute(&mut connection)
            .expect("the table is created");
        drop(connection);
        (database, test_database)
    }

    async fn sleep_on_the_database(database: &Database, seconds: f64) {
        with_connection(database.pool(), move |connection| {
            sql_query(format!("SELECT pg_sleep({seconds})"))
                .execute(connection)
                .map_err(query_failed("sleeping"))
        })
        .await
        .expect("the sleep runs");
    }

    async fn mark(database: &Database, mark: &'static str) -> Result<usize, RepositoryError> {
        with_connection(database.pool(), move |connection| {
            sql_query("INSERT INTO marks (mark) VALUES ($1)")
                .bind::<Text, _>(mark)
                .execute(connection)
                .map_err(query_failed("marking"))
        })
        .await
    }

    async fn marks(database: &Database) -> i64 {
        with_connection(database.pool(), |connection| {
            sql_query("SELECT count(*) AS count FROM marks")
                .get_result::<Count>(connection)
                .map_err(query_failed("counting"))
        })
        .await
        .expect("the count runs")
        .count
    }

    #[tokio::test]
    async fn a_query_that_panics_is_an_error_and_its_thread_goes_on() {
        let (database, _test_database) = one_connection(Duration::from_secs(5));

        let panicked: Result<(), RepositoryError> =
            with_connection(database.pool(), |_connection| panic!("a bug in a query")).await;

        let error = panicked.expect_err("a panic is an error");
        assert!(error.to_string().contains("panicked"), "{error}");
        // The only thread survived: it still runs queries.
        assert_eq!(
            mark(&database, "after the panic")
                .await
                .expect("the insert"),
            1
        );
        assert_eq!(marks(&database).await, 1);
    }

    #[tokio::test]
    async fn a_query_that_waits_longer_than_the_connection_timeout_fails_without_running() {
        let (database, _test_database) = one_connection(Duration::from_millis(200));

        // The one connection is busy for 600 ms; the insert queued behind it waits
        // longer than the 200 ms it may.
        let (_, waited) = tokio::join!(sleep_on_the_database(&database, 0.6), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            mark(&database, "too late").await
        });

        let error = waited.expect_err("the insert waited too long");
        assert!(
            error
                .to_string()
                .contains("no database connection is available"),
            "{error}"
        );
        assert_eq!(marks(&database).await, 0, "the late insert did not run");
    }

    #[tokio::test]
    async fn a_query_whose_caller_went_away_is_skipped() {
        let (database, _test_database) = one_connection(Duration::from_secs(5));

        let (_, given_up) = tokio::join!(sleep_on_the_database(&database, 0.4), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            // The caller stops waiting (as when its HTTP request is dropped) while the
            // insert is still queued behind the sleep.
            tokio::time::timeout(Duration::from_millis(50), mark(&database, "abandoned")).await
        });

        assert!(
            given_up.is_err(),
            "the caller gave up before the insert ran"
        );
        assert_eq!(marks(&database).await, 0, "the abandoned insert never ran");
        assert_eq!(mark(&database, "wanted").await.expect("the insert"), 1);
        assert_eq!(marks(&database).await, 1);
    }

    /// Work that first has the server end its own connection, as a restart would
    /// between checkout and query, then counts the marks; `attempts` counts the runs.
    fn ends_its_connection_once(
        attempts: &Arc<AtomicUsize>,
    ) -> impl Fn(&mut PgConnection) -> Result<i64, RepositoryError> + Send + 'static {
        let attempts = Arc::clone(attempts);
        move |connection| {
            if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                // Fails too, or not, depending on when the backend notices: either way
                // the connection is closed after it.
                let _ =
                    sql_query("SELECT pg_terminate_backend(pg_backend_pid())").execute(connection);
            }
            sql_query("SELECT count(*) AS count FROM marks")
                .get_result::<Count>(connection)
                .map(|count| count.count)
                .map_err(query_failed("counting"))
        }
    }

    #[tokio::test]
    async fn a_read_whose_connection_closes_under_it_runs_once_more_on_a_fresh_one() {
        let (database, _test_database) = one_connection(Duration::from_secs(5));
        let attempts = Arc::new(AtomicUsize::new(0));

        let counted =
            with_connection_read(database.pool(), ends_its_connection_once(&attempts)).await;

        assert_eq!(counted.expect("the second run reads"), 0);
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn other_work_whose_connection_closes_under_it_fails_without_running_again() {
        let (database, _test_database) = one_connection(Duration::from_secs(5));
        let attempts = Arc::new(AtomicUsize::new(0));

        let counted = with_connection(database.pool(), ends_its_connection_once(&attempts)).await;

        counted.expect_err("the connection closed under the work");
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        // The closed connection did not go back into the pool of one: the next query
        // gets a fresh one.
        assert_eq!(mark(&database, "afterwards").await.expect("the insert"), 1);
    }

    #[tokio::test]
    async fn each_connection_has_its_own_thread() {
        let test_database = TestDatabase::create().expect("a fresh test database");
        let database = Database::connect(
            test_database.url(),
            PoolOptions {
                max_size: 3,
                connection_timeout: Duration::from_secs(5),
            },
        )
        .expect("a pool on the test database");
        let sleep_and_name = || {
            with_connection(database.pool(), |connection| {
                sql_query("SELECT pg_sleep(0.3)")
                    .execute(connection)
                    .map_err(query_failed("sleeping"))?;
                Ok::<_, RepositoryError>(std::thread::current().name().map(str::to_owned))
            })
        };

        // Three sleeps queued at once: while each thread sleeps the others take the
        // rest, so the three ran on three threads, all of them database threads.
        let (a, b, c) = tokio::join!(sleep_and_name(), sleep_and_name(), sleep_and_name());
        let mut names: Vec<String> = [a, b, c]
            .into_iter()
            .map(|name| name.expect("the sleep runs").expect("a named thread"))
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["kubernaut-db-0", "kubernaut-db-1", "kubernaut-db-2"]
        );
    }
}
