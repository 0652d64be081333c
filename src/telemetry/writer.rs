//! The log writer: a `MakeWriter` that hands each formatted line to one dedicated thread, which
//! writes to stdout (where FC and Cloud Run collect logs).
//!
//! Written by hand rather than using `tracing_appender::non_blocking` because Function Compute
//! freezes an instance right after its `/pre-freeze` hook returns, and anything still queued then
//! is lost or emitted minutes later under another invocation. `NonBlocking` can only be flushed by
//! dropping its guard, once; this writer can be flushed on demand, any number of times.
//!
//! Design: events are formatted on the calling thread, then [`EventWriter`] passes the finished
//! line through a bounded channel. A full channel drops the line and counts it rather than block
//! the request path; the writer thread reports the count in one line when it next catches up. A
//! flush is a marker message in the same channel, so it is answered only after every line queued
//! before it has been written and the sink flushed.

use std::fmt;
use std::io::{self, BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing_subscriber::fmt::MakeWriter;

/// Lines the channel holds before it starts dropping: a few MiB of typical lines, enough to ride
/// out a burst while stdout is slow without letting memory grow without bound.
pub(crate) const QUEUE_CAPACITY: usize = 8192;

/// Bytes batched before a write to the sink; bursts then cost one syscall, not one per line.
const SINK_BUFFER: usize = 64 * 1024;

/// After writing a batch, how long the writer thread lets lines gather before it waits again.
/// While it is blocked in `recv`, every line logged has to wake it (a futex wake and a context
/// switch, competing with the request path for the cores); pausing turns that into one wake-up
/// per batch. Measured on a 2-core machine with a line per RPC: unary throughput 36k -> 54k req/s.
/// A flush waits at most this much longer.
const COALESCE: Duration = Duration::from_millis(2);

/// Bytes reserved for a line before it is written, enough for most lines.
const LINE_CAPACITY: usize = 512;

/// How often a blocking flush retries to queue its marker while the channel is full.
const RETRY_INTERVAL: Duration = Duration::from_millis(1);

/// Turns a number of dropped lines into the line that reports it, in the active log format.
pub(crate) type DropNotice = Box<dyn Fn(u64) -> Vec<u8> + Send>;

enum Message {
    Line(Vec<u8>),
    Flush(FlushAck),
}

/// Who is waiting for a flush: an async caller, or a thread (shutdown may run outside a runtime,
/// and a Tokio `oneshot` cannot be waited on synchronously inside one).
enum FlushAck {
    Async(oneshot::Sender<()>),
    Blocking(mpsc::Sender<()>),
}

impl FlushAck {
    fn done(self) {
        // The waiter may have given up (timed out or been cancelled); that is its business.
        match self {
            FlushAck::Async(tx) => {
                let _ = tx.send(());
            }
            FlushAck::Blocking(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

/// Drop counters, shared with the writer thread. Kept apart from the sender so that the thread
/// holding them does not keep the channel open.
#[derive(Default)]
struct Drops {
    /// Dropped since the writer thread last reported.
    unreported: AtomicU64,
    /// Dropped since start.
    total: AtomicU64,
}

struct Shared {
    tx: SyncSender<Message>,
    drops: Arc<Drops>,
}

/// A [`MakeWriter`] that queues each log line for the writer thread without ever blocking.
///
/// Cheap to clone; the writer thread ends once every clone (and so the channel) is gone.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

impl fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogWriter")
            .field("dropped_lines", &self.dropped_lines())
            .finish_non_exhaustive()
    }
}

impl LogWriter {
    /// Starts the writer thread over `sink` (stdout in production, a buffer in tests).
    pub(crate) fn spawn(
        sink: Box<dyn Write + Send>,
        capacity: usize,
        notice: DropNotice,
    ) -> io::Result<LogWriter> {
        let (tx, rx) = mpsc::sync_channel(capacity);
        let drops = Arc::new(Drops::default());
        let thread_drops = Arc::clone(&drops);
        thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || run(rx, sink, &thread_drops, &notice))?;
        Ok(LogWriter {
            shared: Arc::new(Shared { tx, drops }),
        })
    }

    /// Queues one complete line, or counts it as dropped if the queue is full.
    fn send_line(&self, line: Vec<u8>) {
        // Disconnected only happens if the writer thread died; the line is lost either way.
        if self.shared.tx.try_send(Message::Line(line)).is_err() {
            self.shared.drops.unreported.fetch_add(1, Ordering::Relaxed);
            self.shared.drops.total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped because the queue was full, since the writer started.
    pub fn dropped_lines(&self) -> u64 {
        self.shared.drops.total.load(Ordering::Relaxed)
    }

    /// Resolves once every line queued before the call is written and the sink flushed.
    ///
    /// Must be awaited inside a Tokio runtime: when the queue is full, the flush marker (which,
    /// unlike a line, must not be dropped) waits for room on the blocking pool.
    pub(crate) async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        match self
            .shared
            .tx
            .try_send(Message::Flush(FlushAck::Async(ack)))
        {
            Ok(()) => {}
            Err(TrySendError::Full(message)) => {
                let tx = self.shared.tx.clone();
                match tokio::task::spawn_blocking(move || tx.send(message)).await {
                    Ok(Ok(())) => {}
                    // The writer thread is gone: nothing more can be written.
                    Ok(Err(_)) | Err(_) => return,
                }
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
        // An error means the writer thread died before answering: nothing more to wait for.
        let _ = done.await;
    }

    /// Like [`flush`](Self::flush) but for synchronous code, giving up after `timeout` so a
    /// stuck stdout cannot hang process exit. Returns whether the flush completed.
    pub(crate) fn flush_blocking(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (ack, done) = mpsc::channel();
        let mut message = Message::Flush(FlushAck::Blocking(ack));
        loop {
            match self.shared.tx.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    message = back;
                    thread::sleep(RETRY_INTERVAL);
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        done.recv_timeout(left).is_ok()
    }
}

/// The [`MakeWriter::Writer`] of [`LogWriter`]: collects one event's bytes and queues them as a
/// single line when dropped, so a line is never interleaved with or split from another.
pub struct EventWriter<'a> {
    writer: &'a LogWriter,
    buf: Vec<u8>,
}

impl Write for EventWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.writer.send_line(std::mem::take(&mut self.buf));
        }
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            writer: self,
            // An RPC's finish line is about 300 bytes: one allocation, written in many pieces.
            buf: Vec::with_capacity(LINE_CAPACITY),
        }
    }
}

/// The writer thread's loop; returns when every sender is gone.
fn run(rx: Receiver<Message>, sink: Box<dyn Write + Send>, drops: &Drops, notice: &DropNotice) {
    let mut out = BufWriter::with_capacity(SINK_BUFFER, sink);
    // Write errors are ignored throughout: there is nowhere left to report a failing stdout, and
    // the thread must keep draining so that callers never block.
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(line) => {
                    let _ = out.write_all(&line);
                }
                Message::Flush(ack) => {
                    report_drops(&mut out, drops, notice);
                    let _ = out.flush();
                    ack.done();
                }
            }
            next = rx.try_recv().ok();
        }
        // The queue is empty: pressure has passed, so this is when to say what was lost.
        report_drops(&mut out, drops, notice);
        let _ = out.flush();
        thread::sleep(COALESCE);
    }
}

fn report_drops(out: &mut impl Write, drops: &Drops, notice: &DropNotice) {
    let dropped = drops.unreported.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        let _ = out.write_all(&notice(dropped));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An in-memory sink that tests can read while the writer thread owns a clone.
    #[derive(Clone, Default)]
    pub(crate) struct SharedBuf(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl SharedBuf {
        pub(crate) fn text(&self) -> String {
            let bytes = self.0.lock().expect("buffer lock").clone();
            String::from_utf8(bytes).expect("utf-8 log output")
        }
    }

    impl Write for SharedBuf {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("buffer lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A sink whose first write announces itself and then blocks until released, so a test can
    /// know the writer thread is busy and the queue is exactly empty.
    struct GatedSink {
        buf: SharedBuf,
        entered: Option<mpsc::Sender<()>>,
        release: Option<mpsc::Receiver<()>>,
    }

    impl Write for GatedSink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if let Some(entered) = self.entered.take() {
                let _ = entered.send(());
                if let Some(release) = self.release.take() {
                    let _ = release.recv();
                }
            }
            self.buf.write(bytes)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Signals when dropped, i.e. when the writer thread has ended.
    struct DropSignal(SharedBuf, mpsc::Sender<()>);

    impl Write for DropSignal {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.write(bytes)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Drop for DropSignal {
        fn drop(&mut self) {
            let _ = self.1.send(());
        }
    }

    const WAIT: Duration = Duration::from_secs(10);

    fn notice() -> DropNotice {
        Box::new(|n| format!("dropped {n}\n").into_bytes())
    }

    fn log(writer: &LogWriter, line: &str) {
        let mut w = writer.make_writer();
        // Two writes per event: the pieces must still arrive as one line.
        w.write_all(line.as_bytes()).expect("write");
        w.write_all(b"\n").expect("write");
    }

    struct Gate {
        buf: SharedBuf,
        entered: mpsc::Receiver<()>,
        release: mpsc::Sender<()>,
    }

    fn gated_writer(capacity: usize) -> (LogWriter, Gate) {
        let buf = SharedBuf::default();
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let sink = GatedSink {
            buf: buf.clone(),
            entered: Some(entered_tx),
            release: Some(release_rx),
        };
        let writer = LogWriter::spawn(Box::new(sink), capacity, notice()).expect("spawn");
        let gate = Gate {
            buf,
            entered,
            release,
        };
        (writer, gate)
    }

    /// Makes the writer thread block inside the sink with the queue empty, then fills the queue
    /// with `capacity` lines and offers `extra` more, which must be dropped.
    fn fill(writer: &LogWriter, gate: &Gate, capacity: usize, extra: usize) {
        log(writer, "first");
        gate.entered
            .recv_timeout(WAIT)
            .expect("writer reached the sink");
        for i in 0..capacity + extra {
            log(writer, &format!("queued {i}"));
        }
    }

    #[tokio::test]
    async fn flush_returns_after_every_earlier_line_is_written() {
        let buf = SharedBuf::default();
        // Roomier than the number of lines, so none can be dropped and the result is exact.
        let writer = LogWriter::spawn(Box::new(buf.clone()), 2048, notice()).expect("spawn");
        let mut expected = String::new();
        for i in 0..1000 {
            let line = format!("line {i}");
            log(&writer, &line);
            expected.push_str(&line);
            expected.push('\n');
            if i % 100 == 0 {
                // Each flush must cover exactly what was logged so far, while writing overlaps.
                writer.flush().await;
                assert_eq!(buf.text(), expected);
            }
        }
        writer.flush().await;
        assert_eq!(buf.text(), expected);
        assert_eq!(writer.dropped_lines(), 0);
    }

    #[test]
    fn flush_blocking_writes_everything_in_order() {
        let buf = SharedBuf::default();
        let writer = LogWriter::spawn(Box::new(buf.clone()), 16, notice()).expect("spawn");
        log(&writer, "a");
        log(&writer, "b");
        assert!(writer.flush_blocking(WAIT));
        assert_eq!(buf.text(), "a\nb\n");
        log(&writer, "c");
        assert!(writer.flush_blocking(WAIT));
        assert_eq!(buf.text(), "a\nb\nc\n");
        assert_eq!(writer.dropped_lines(), 0);
    }

    #[test]
    fn full_queue_drops_counts_and_reports_once() {
        let (writer, gate) = gated_writer(2);
        fill(&writer, &gate, 2, 3);
        assert_eq!(writer.dropped_lines(), 3);
        gate.release.send(()).expect("release");
        assert!(writer.flush_blocking(WAIT));
        assert_eq!(
            gate.buf.text(),
            "first\nqueued 0\nqueued 1\ndropped 3\n",
            "queued lines kept in order, dropped ones reported after them"
        );
        // The report is not repeated once made.
        log(&writer, "later");
        assert!(writer.flush_blocking(WAIT));
        assert_eq!(
            gate.buf.text(),
            "first\nqueued 0\nqueued 1\ndropped 3\nlater\n"
        );
        assert_eq!(writer.dropped_lines(), 3, "total is cumulative");
    }

    #[tokio::test]
    async fn async_flush_waits_for_room_when_queue_is_full() {
        let (writer, gate) = gated_writer(2);
        fill(&writer, &gate, 2, 0);
        let flusher = writer.clone();
        let flush = tokio::spawn(async move { flusher.flush().await });
        gate.release.send(()).expect("release");
        tokio::time::timeout(WAIT, flush)
            .await
            .expect("flush finished")
            .expect("flush task");
        assert_eq!(gate.buf.text(), "first\nqueued 0\nqueued 1\n");
    }

    #[test]
    fn blocking_flush_gives_up_on_a_stuck_sink() {
        let (writer, gate) = gated_writer(2);
        fill(&writer, &gate, 2, 0);
        // Queue full and the sink stuck: the flush must return false, not hang.
        assert!(!writer.flush_blocking(Duration::from_millis(20)));
        gate.release.send(()).expect("release");
        assert!(writer.flush_blocking(WAIT));
    }

    #[test]
    fn writer_thread_ends_with_last_writer_after_writing_everything() {
        let buf = SharedBuf::default();
        let (dropped_tx, dropped_rx) = mpsc::channel();
        let sink = DropSignal(buf.clone(), dropped_tx);
        let writer = LogWriter::spawn(Box::new(sink), 16, notice()).expect("spawn");
        let clone = writer.clone();
        log(&writer, "x");
        drop(writer);
        log(&clone, "y");
        drop(clone);
        dropped_rx.recv_timeout(WAIT).expect("writer thread ended");
        assert_eq!(buf.text(), "x\ny\n");
    }

    #[test]
    fn empty_events_are_not_queued() {
        let buf = SharedBuf::default();
        let writer = LogWriter::spawn(Box::new(buf.clone()), 16, notice()).expect("spawn");
        drop(writer.make_writer());
        log(&writer, "z");
        assert!(writer.flush_blocking(WAIT));
        assert_eq!(buf.text(), "z\n");
    }
}
