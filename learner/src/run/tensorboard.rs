//! TensorBoard event files in the run directory, so `tensorboard --logdir runs` shows every run live.
//!
//! Each process start that trains opens a new file `events.out.tfevents.<unix seconds>.<hostname>` (TensorBoard
//! reads all the files of a directory as one run, in name order). A file is a sequence of TFRecords (u64 length,
//! little endian; masked CRC-32C of the length; the data; masked CRC-32C of the data) holding serialized `Event`
//! protos: first `file_version = "brain.Event:2"`, then a `SessionLog` START (see [`EventWriter::create`]), then
//! one `Event` per update at `step` = env steps and `wall_time` = Unix time, whose `Summary` has one `simple_value`
//! per [`COLUMNS`] entry (the `progress.csv` values, as f32; `env_steps` itself is left out, since it is the step,
//! and so is a column without a value yet, such as `mean_return` before the first episode ends) and the histogram
//! `advantages` of the batch's advantages ([`crate::update::trainer::Histogram`]).
//!
//! The messages below are hand-written prost structs carrying only the fields written here, with the field
//! numbers and types of TensorBoard's own protos (tensorflow/tensorboard, `tensorboard/compat/proto/event.proto`:
//! `Event`, `SessionLog`; `tensorboard/compat/proto/summary.proto`: `Summary`, `Summary.Value`;
//! `tensorboard/compat/proto/histogram.proto`: `HistogramProto`). The framing and the CRC mask are those of
//! TensorFlow's record writer (`tensorboard/data/server/masked_crc.rs` documents the mask). No maintained Rust
//! crate writes these files: `tensorboard-rs` is marked inactive and pulls in protobuf 2.

use crate::error::{Error, Result};
use crate::run::dir::WholeAppends;
use crate::run::progress::{COLUMNS, values};
use crate::run::update_loop::ReportSink;
use crate::update::trainer::{Histogram, UpdateReport};
use common::policy::unix_now;
use prost::Message;
use std::path::{Path, PathBuf};

/// The `file_version` of the first event: TensorBoard's current event format.
pub const FILE_VERSION: &str = "brain.Event:2";

/// Tag of the advantage histogram.
pub const ADVANTAGES_TAG: &str = "advantages";

/// `tensorboard.Event` (event.proto): a timestamped, stepped record of one kind (`what`).
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// Global step (here: env steps trained on).
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// What the event holds (the proto's `oneof what`).
    #[prost(oneof = "What", tags = "3, 5, 7")]
    pub what: Option<What>,
}

/// `Event.what` (event.proto), the members written here.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    /// `file_version = 3`: the first event of a file.
    #[prost(string, tag = "3")]
    FileVersion(String),
    /// `summary = 5`: values of one step.
    #[prost(message, tag = "5")]
    Summary(Summary),
    /// `session_log = 7`: a (re)start of training.
    #[prost(message, tag = "7")]
    SessionLog(SessionLog),
}

/// `tensorboard.SessionLog` (event.proto).
#[derive(Clone, PartialEq, Message)]
pub struct SessionLog {
    /// `SessionStatus`: 1 is `START` ([`SESSION_START`]).
    #[prost(int32, tag = "1")]
    pub status: i32,
    /// Free text.
    #[prost(string, tag = "3")]
    pub msg: String,
}

/// `SessionLog.SessionStatus.START` (event.proto).
pub const SESSION_START: i32 = 1;

/// `tensorboard.Summary` (summary.proto).
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    /// `repeated Value value = 1`.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<Value>,
}

/// `tensorboard.Summary.Value` (summary.proto), the members written here.
#[derive(Clone, PartialEq, Message)]
pub struct Value {
    /// The series' name.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// The proto's `oneof value`.
    #[prost(oneof = "ValueKind", tags = "2, 5")]
    pub value: Option<ValueKind>,
}

/// `Summary.Value.value` (summary.proto), the members written here.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ValueKind {
    /// `float simple_value = 2`: a scalar.
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    /// `HistogramProto histo = 5`.
    #[prost(message, tag = "5")]
    Histo(HistogramProto),
}

/// `tensorboard.HistogramProto` (histogram.proto): bucket `i` counts the values in `(bucket_limit[i-1],
/// bucket_limit[i]]`; TensorBoard draws the first bucket from `min` and the last one to `max`.
#[derive(Clone, PartialEq, Message)]
pub struct HistogramProto {
    /// Smallest value.
    #[prost(double, tag = "1")]
    pub min: f64,
    /// Largest value.
    #[prost(double, tag = "2")]
    pub max: f64,
    /// Number of values.
    #[prost(double, tag = "3")]
    pub num: f64,
    /// Their sum.
    #[prost(double, tag = "4")]
    pub sum: f64,
    /// The sum of their squares.
    #[prost(double, tag = "5")]
    pub sum_squares: f64,
    /// Upper edges of the buckets (`[packed = true]`, prost's default for repeated numbers).
    #[prost(double, repeated, tag = "6")]
    pub bucket_limit: Vec<f64>,
    /// Counts of the buckets (packed).
    #[prost(double, repeated, tag = "7")]
    pub bucket: Vec<f64>,
}

impl From<&Histogram> for HistogramProto {
    fn from(h: &Histogram) -> Self {
        Self {
            min: h.min,
            max: h.max,
            num: h.num as f64,
            sum: h.sum,
            sum_squares: h.sum_squares,
            bucket_limit: h.bucket_limits().to_vec(),
            bucket: h.counts.iter().map(|&c| c as f64).collect(),
        }
    }
}

/// The CRC-32C of `data`, masked as TFRecords store it (`((crc >> 15) | (crc << 17)) + 0xa282ead8`).
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Appends `data` to `out` as one TFRecord.
pub fn append_record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// This machine's name for event file names (as TensorFlow's writer uses it): `/proc/sys/kernel/hostname`, else
/// `$HOSTNAME`, else `localhost`; characters other than letters, digits, `-`, `_` and `.` become `_`.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

/// The summary of one update: a `simple_value` per [`COLUMNS`] entry but `env_steps` (the step), for the columns
/// that have a value, and the advantage histogram when the batch had finite advantages. `wall_seconds` is the
/// run's, as in `progress.csv`.
pub fn summary(r: &UpdateReport, wall_seconds: f64) -> Summary {
    let scalars = COLUMNS.iter().zip(values(r, wall_seconds)).filter(|(tag, _)| **tag != "env_steps");
    let mut value: Vec<Value> = scalars
        .filter_map(|(tag, v)| v.map(|v| Value { tag: tag.to_string(), value: Some(ValueKind::SimpleValue(v as f32)) }))
        .collect();
    let h = &r.advantages.histogram;
    if h.num > 0 {
        value.push(Value { tag: ADVANTAGES_TAG.to_string(), value: Some(ValueKind::Histo(h.into())) });
    }
    Summary { value }
}

/// Writes a run's TensorBoard event file: one event per update, flushed at once so TensorBoard shows it live.
pub struct EventWriter {
    /// The file, appended to in whole records.
    out: WholeAppends,
    /// Records of the file's head (file version, session start) not written yet: they go out with the next write.
    head: Vec<u8>,
    /// Wall seconds of the run before this process (as `progress.csv` continues them after a resume).
    wall_offset: f64,
}

impl EventWriter {
    /// Creates a new event file in `dir` for training that starts at `start_steps` env steps (0, or where a resume
    /// continues), with the run's wall seconds continuing from `wall_offset`
    /// ([`crate::run::progress::ProgressCsv::wall_offset`]). The file starts with the file version and a
    /// `SessionLog` START at step `start_steps + 1`: TensorBoard's reader then drops the steps above `start_steps`
    /// from the directory's older files, the updates that a resume trains again (as `progress.csv` drops their
    /// rows). Fails only if the file cannot be created; the head is written with the first update (or at once by
    /// [`Self::flush_head`]).
    pub fn create(dir: &Path, start_steps: u64, wall_offset: f64) -> Result<Self> {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let base = format!("events.out.tfevents.{secs:010}.{}", hostname());
        let mut n = 0u32;
        let (file, path) = loop {
            let path = dir.join(if n == 0 { base.clone() } else { format!("{base}.{n}") });
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (file, path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(Error::io(&path)(e)),
            }
        };
        Ok(Self::on(file, path, start_steps, wall_offset))
    }

    /// A writer on the empty `file` at `path`.
    fn on(file: std::fs::File, path: PathBuf, start_steps: u64, wall_offset: f64) -> Self {
        let now = unix_now();
        let mut head = Vec::new();
        let version = Event { wall_time: now, step: 0, what: Some(What::FileVersion(FILE_VERSION.to_string())) };
        append_record(&mut head, &version.encode_to_vec());
        let start = Event {
            wall_time: now,
            step: start_steps.saturating_add(1).min(i64::MAX as u64) as i64,
            what: Some(What::SessionLog(SessionLog {
                status: SESSION_START,
                msg: format!("training starts at {start_steps} env steps"),
            })),
        };
        append_record(&mut head, &start.encode_to_vec());
        let metric = common::metrics::TENSORBOARD_WRITE_FAILURES;
        Self { out: WholeAppends::new(file, path, 0, "TensorBoard event file", metric), head, wall_offset }
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        self.out.path()
    }

    /// Writes the file's head now (TensorBoard then lists the run before its first update).
    pub fn flush_head(&mut self) {
        self.write(Vec::new());
    }

    /// Appends one update's event (see [`summary`]) and flushes. A record that cannot be written (disk full) is
    /// left out: a partly written record is cut off again, the failure is counted in
    /// [`common::metrics::TENSORBOARD_WRITE_FAILURES`] and logged (at most once a minute for the same error), and
    /// training goes on; later updates are written once there is space again.
    pub fn append(&mut self, r: &UpdateReport, wall_seconds: f64) {
        let event = Event {
            wall_time: unix_now(),
            step: r.env_steps.min(i64::MAX as u64) as i64,
            what: Some(What::Summary(summary(r, wall_seconds + self.wall_offset))),
        };
        let mut record = Vec::new();
        append_record(&mut record, &event.encode_to_vec());
        self.write(record);
    }

    /// Writes the pending head and `records` with one `write` call and flushes; on failure cuts the file back to its
    /// complete records and keeps the head pending.
    fn write(&mut self, records: Vec<u8>) {
        let bytes = if self.head.is_empty() { records } else { [self.head.as_slice(), &records].concat() };
        if bytes.is_empty() {
            return;
        }
        // TensorBoard stops reading a file at a broken record: WholeAppends cuts a partly written one off.
        if self.out.append(&bytes) {
            self.head.clear();
        }
    }
}

impl ReportSink for EventWriter {
    fn record(&mut self, report: &UpdateReport, wall_seconds: f64) {
        self.append(report, wall_seconds);
    }
}

/// No writer (TensorBoard turned off, or the file could not be created): nothing to record.
impl ReportSink for Option<EventWriter> {
    fn record(&mut self, report: &UpdateReport, wall_seconds: f64) {
        if let Some(writer) = self {
            writer.append(report, wall_seconds);
        }
    }
}

/// The event writer of a run directory when `enabled` (the config's `tensorboard`), with its head written; `None`
/// when disabled, or when the file cannot be created, which is counted in
/// [`common::metrics::TENSORBOARD_WRITE_FAILURES`] and logged: training goes on without it.
pub fn open(enabled: bool, dir: &Path, start_steps: u64, wall_offset: f64) -> Option<EventWriter> {
    if !enabled {
        return None;
    }
    match EventWriter::create(dir, start_steps, wall_offset) {
        Ok(mut writer) => {
            writer.flush_head();
            tracing::debug!(path = %writer.path().display(), "TensorBoard event file");
            Some(writer)
        }
        Err(e) => {
            metrics::counter!(common::metrics::TENSORBOARD_WRITE_FAILURES).increment(1);
            tracing::error!(error = %e, "cannot create the TensorBoard event file; training goes on without it");
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::update::trainer::AdvantageStats;

    /// Splits a TFRecord file into its records' data, checking lengths and both CRCs.
    fn records(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let len_bytes: [u8; 8] = rest[..8].try_into().unwrap();
            let len = u64::from_le_bytes(len_bytes) as usize;
            assert_eq!(u32::from_le_bytes(rest[8..12].try_into().unwrap()), masked_crc32c(&len_bytes));
            let data = &rest[12..12 + len];
            assert_eq!(u32::from_le_bytes(rest[12 + len..16 + len].try_into().unwrap()), masked_crc32c(data));
            out.push(data.to_vec());
            rest = &rest[16 + len..];
        }
        out
    }

    fn report(env_steps: u64) -> UpdateReport {
        let adv: Vec<f32> = (0..256).map(|i| (i as f32 - 128.0) / 10.0).collect();
        UpdateReport {
            env_steps,
            policy_version: env_steps / 256,
            approx_kl: 0.0123,
            explained_variance: f64::NAN,
            advantages: AdvantageStats { histogram: Histogram::of(&adv), ..Default::default() },
            ..Default::default()
        }
    }

    /// The masked CRC of a record TensorFlow wrote (the reference value of TensorBoard's `masked_crc.rs`), and
    /// CRC-32C's check value.
    #[test]
    fn masked_crc_matches_tensorflow() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc32c(b"\x1a\x11CRC test, one two"), 0x5794_d08a);
    }

    /// Field numbers and wire types as in TensorBoard's protos: `file_version` is field 3 (bytes), a histogram's
    /// `bucket_limit` field 6 packed.
    #[test]
    fn encodings_use_the_proto_field_numbers() {
        let version = Event { wall_time: 0.0, step: 0, what: Some(What::FileVersion("v".into())) };
        assert_eq!(version.encode_to_vec(), [0x1a, 1, b'v']);
        let histo = HistogramProto { bucket_limit: vec![1.0, 2.0], ..Default::default() };
        assert_eq!(&histo.encode_to_vec()[..2], [0x32, 16]);
        let value = Value { tag: "a".into(), value: Some(ValueKind::SimpleValue(1.0)) };
        assert_eq!(value.encode_to_vec(), [0x0a, 1, b'a', 0x15, 0, 0, 0x80, 0x3f]);
        let start = Event {
            wall_time: 0.0,
            step: 0,
            what: Some(What::SessionLog(SessionLog { status: SESSION_START, msg: String::new() })),
        };
        assert_eq!(start.encode_to_vec(), [0x3a, 2, 0x08, 1]);
    }

    #[test]
    fn a_file_holds_the_head_then_one_event_per_update() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(true, dir.path(), 512, 10.0).unwrap();
        let name = w.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        w.record(&report(768), 2.0);
        w.record(&report(1024), 3.0);
        let second = EventWriter::create(dir.path(), 0, 0.0).unwrap();
        assert_ne!(second.path(), w.path(), "a second writer in the same second gets a file of its own");

        let events: Vec<Event> =
            records(&std::fs::read(w.path()).unwrap()).iter().map(|d| Event::decode(d.as_slice()).unwrap()).collect();
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].what, Some(What::FileVersion(FILE_VERSION.into())));
        assert!(matches!(&events[1].what, Some(What::SessionLog(s)) if s.status == SESSION_START));
        assert_eq!(events[1].step, 513);
        assert_eq!((events[2].step, events[3].step), (768, 1024));
        assert!(events[2].wall_time > 1.0e9, "Unix time");
        let Some(What::Summary(s)) = &events[2].what else { panic!("not a summary: {:?}", events[2]) };
        let tags: Vec<&str> = s.value.iter().map(|v| v.tag.as_str()).collect();
        assert!(!tags.contains(&"env_steps") && !tags.contains(&"mean_return"), "{tags:?}");
        // No episode has ended: `mean_return`, `mean_length` and `return_std` have no value yet.
        assert_eq!(tags.len(), COLUMNS.len() - 4 + 1, "every column with a value, and the histogram: {tags:?}");
        let scalar = |tag: &str| {
            s.value.iter().find(|v| v.tag == tag).and_then(|v| match v.value {
                Some(ValueKind::SimpleValue(x)) => Some(x),
                _ => None,
            })
        };
        assert_eq!(scalar("wall_seconds"), Some(12.0), "wall seconds continue from the offset");
        assert_eq!(scalar("approx_kl"), Some(0.0123));
        assert!(scalar("explained_variance").unwrap().is_nan());
        let Some(Value { value: Some(ValueKind::Histo(h)), .. }) = s.value.iter().find(|v| v.tag == ADVANTAGES_TAG)
        else {
            panic!("no histogram")
        };
        assert_eq!((h.num, h.bucket.iter().sum::<f64>(), h.bucket.len(), h.bucket_limit.len()), (256.0, 256.0, 30, 30));
        let (min, max) = (-12.8f32 as f64, 12.7f32 as f64);
        assert_eq!((h.min, h.max, *h.bucket_limit.last().unwrap()), (min, max, max));
    }

    #[test]
    fn disabled_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open(false, dir.path(), 0, 0.0).is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// On a full disk (`/dev/full`: every write fails with ENOSPC) records are dropped without a panic, and the
    /// head stays pending for the next write.
    #[cfg(target_os = "linux")]
    #[test]
    fn write_failures_are_survived() {
        let file = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let mut w = EventWriter::on(file, PathBuf::from("/dev/full"), 0, 0.0);
        w.flush_head();
        w.record(&report(256), 1.0);
        assert!(!w.head.is_empty());
        assert_eq!(w.out.len(), 0);
    }
}
