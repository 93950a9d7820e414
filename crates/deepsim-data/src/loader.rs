//! Batches from a [`Dataset`]: shuffled per epoch, built by background threads a bounded
//! number of batches ahead, identical for a seed whatever the thread count, and resumable
//! from a saved [`Position`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use candle::{Device, Tensor};

use crate::cache::FeatureCache;
use crate::dataset::{stack, Dataset};
use crate::error::{Error, Result};
use crate::rng::{permutation, Rng};

const EPOCH_ORDER: u64 = 1;
const SAMPLE: u64 = 2;

/// Options of a [`Loader`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// A fresh random order every epoch (otherwise index order).
    pub shuffle: bool,
    /// Leave out an epoch's last, incomplete batch.
    pub drop_last: bool,
    /// Seeds the epoch orders and every random crop and flip.
    pub seed: u64,
    /// Background threads building batches (at least 1).
    pub workers: usize,
    /// How many batches may be built ahead of the consumer (at least 1).
    pub prefetch: usize,
}

impl LoaderConfig {
    /// Shuffled, incomplete batches dropped, seed 0, one worker per available core, and twice
    /// as many batches prefetched.
    pub fn new(batch_size: usize) -> Self {
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        LoaderConfig {
            batch_size,
            shuffle: true,
            drop_last: true,
            seed: 0,
            workers,
            prefetch: 2 * workers,
        }
    }
}

/// Where a stream of batches stands: the epoch and the batch within it. Batch `b` of epoch `e`
/// holds the same samples, augmented the same way, every time it is loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// The epoch, from 0.
    pub epoch: u64,
    /// The batch within the epoch, from 0.
    pub batch: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {} batch {}", self.epoch, self.batch)
    }
}

impl FromStr for Position {
    type Err = Error;

    /// Parses the `Display` form, `epoch E batch B`.
    fn from_str(s: &str) -> Result<Self> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let bad = || Error::InvalidArgument(format!("position {s:?}: expected `epoch E batch B`"));
        match words[..] {
            ["epoch", e, "batch", b] => Ok(Position {
                epoch: e.parse().map_err(|_| bad())?,
                batch: b.parse().map_err(|_| bad())?,
            }),
            _ => Err(bad()),
        }
    }
}

/// A batch: `[N, C, H, W]` images in [0, 1] (f32, CPU), labels and cached features when the
/// source has them, the dataset indices of its samples, and its position. `N` is the batch
/// size, less any samples found unusable while loading.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[N, C, H, W]`, f32 on the CPU.
    pub images: Tensor,
    /// `[N]` u32 class indices.
    pub labels: Option<Tensor>,
    /// `[N, …]` cached features of the same samples, when a [`FeatureCache`] is attached.
    pub features: Option<Tensor>,
    /// The dataset index of each sample.
    pub indices: Vec<usize>,
    /// Where the batch lies in the stream.
    pub position: Position,
}

/// Produces batches from a dataset. Cheap to share; each [`Stream`] runs its own threads.
#[derive(Clone)]
pub struct Loader {
    inner: Arc<Inner>,
}

struct Inner {
    dataset: Arc<dyn Dataset>,
    config: LoaderConfig,
    features: Option<Arc<FeatureCache>>,
    orders: Mutex<Vec<(u64, Arc<Vec<usize>>)>>,
}

impl fmt::Debug for Loader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loader")
            .field("len", &self.inner.dataset.len())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Loader {
    /// A loader over `dataset`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero batch size, worker count or prefetch depth, or
    /// when `drop_last` leaves no batch (fewer samples than one batch); [`Error::Empty`] for an
    /// empty dataset.
    pub fn new(dataset: Arc<dyn Dataset>, config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 || config.workers == 0 || config.prefetch == 0 {
            return Err(Error::InvalidArgument(format!(
                "loader: batch_size, workers and prefetch must be positive, got {config:?}"
            )));
        }
        if dataset.is_empty() {
            return Err(Error::Empty {
                location: "loader".into(),
                detail: "the dataset has no samples".into(),
            });
        }
        if config.drop_last && dataset.len() < config.batch_size {
            return Err(Error::InvalidArgument(format!(
                "loader: {} samples make no full batch of {} (set drop_last = false or a smaller batch)",
                dataset.len(),
                config.batch_size
            )));
        }
        Ok(Loader {
            inner: Arc::new(Inner {
                dataset,
                config,
                features: None,
                orders: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Serves the features of `cache` with every batch.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the cache was built from other data (its fingerprint or
    /// length differs from the dataset's).
    pub fn with_features(self, cache: Arc<FeatureCache>) -> Result<Self> {
        let d = &self.inner.dataset;
        if cache.data_fingerprint() != d.fingerprint() || cache.len() != d.len() {
            return Err(Error::InvalidArgument(format!(
                "feature cache {} was built from other data ({} samples, data {}; this dataset: \
                 {} samples, data {})",
                cache.dir().display(),
                cache.len(),
                short(cache.data_fingerprint()),
                d.len(),
                short(&d.fingerprint())
            )));
        }
        let inner = Inner {
            dataset: d.clone(),
            config: self.inner.config.clone(),
            features: Some(cache),
            orders: Mutex::new(Vec::new()),
        };
        Ok(Loader { inner: Arc::new(inner) })
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.inner.dataset
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.inner.config
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        batches_per_epoch(&self.inner)
    }

    /// The order in which `epoch` visits the dataset's indices.
    pub fn order(&self, epoch: u64) -> Arc<Vec<usize>> {
        self.inner.order(epoch)
    }

    /// The dataset indices of the batch at `position`.
    pub fn batch_indices(&self, position: Position) -> Vec<usize> {
        self.inner.indices(position)
    }

    /// Loads the batch at `position` on the calling thread.
    ///
    /// # Errors
    /// As [`Dataset::get`]; [`Error::InvalidArgument`] for a batch beyond the epoch's end.
    pub fn load(&self, position: Position) -> Result<Batch> {
        if position.batch >= self.batches_per_epoch() {
            return Err(Error::InvalidArgument(format!(
                "loader: {position} is past the epoch's {} batches",
                self.batches_per_epoch()
            )));
        }
        self.inner.build(position)
    }

    /// An endless stream of batches starting at `from`, epoch after epoch.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `from.batch` lies past the epoch's end.
    pub fn stream(&self, from: Position) -> Result<Stream> {
        self.start(from, None)
    }

    /// The batches of one epoch.
    pub fn epoch(&self, epoch: u64) -> Result<Stream> {
        let bpe = self.batches_per_epoch();
        self.start(Position { epoch, batch: 0 }, Some((epoch + 1) * bpe))
    }

    fn start(&self, from: Position, end: Option<u64>) -> Result<Stream> {
        let bpe = self.batches_per_epoch();
        if from.batch >= bpe {
            return Err(Error::InvalidArgument(format!(
                "loader: cannot start at {from}: an epoch has {bpe} batches"
            )));
        }
        let first = from.epoch * bpe + from.batch;
        let shared = Arc::new(Shared {
            state: Mutex::new(Claims { next_claim: first, next_yield: first, stop: false }),
            wake: Condvar::new(),
        });
        let (sender, receiver) = mpsc::channel();
        let mut threads = Vec::new();
        for w in 0..self.inner.config.workers {
            let inner = self.inner.clone();
            let shared = shared.clone();
            let sender = sender.clone();
            let prefetch = self.inner.config.prefetch as u64;
            let handle = std::thread::Builder::new()
                .name(format!("deepsim-data-{w}"))
                .spawn(move || worker(&inner, &shared, &sender, prefetch, end))
                .map_err(|e| Error::Loader(format!("cannot start a worker thread: {e}")))?;
            threads.push(handle);
        }
        Ok(Stream {
            inner: self.inner.clone(),
            shared,
            receiver,
            threads,
            pending: BTreeMap::new(),
            next: first,
            end,
            finished: false,
        })
    }

    /// The values a checkpoint stores to resume at `position`: the position and what must not
    /// change in between (seed, batch size, shuffling, the data's fingerprint and length).
    pub fn resume_state(&self, position: Position) -> HashMap<String, String> {
        let c = &self.inner.config;
        let d = &self.inner.dataset;
        HashMap::from([
            ("data.position".to_string(), position.to_string()),
            ("data.seed".to_string(), c.seed.to_string()),
            ("data.batch_size".to_string(), c.batch_size.to_string()),
            ("data.shuffle".to_string(), c.shuffle.to_string()),
            ("data.drop_last".to_string(), c.drop_last.to_string()),
            ("data.len".to_string(), d.len().to_string()),
            ("data.fingerprint".to_string(), d.fingerprint()),
        ])
    }

    /// The position saved by [`Loader::resume_state`], after checking that this loader would
    /// continue the same sequence.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first value that is missing or differs.
    pub fn resume_position(&self, saved: &HashMap<String, String>) -> Result<Position> {
        let now = self.resume_state(Position::default());
        let mut keys: Vec<&String> = now.keys().filter(|k| *k != "data.position").collect();
        keys.sort();
        for key in keys {
            match saved.get(key) {
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "resume: the checkpoint has no {key}"
                    )))
                }
                Some(v) if v != &now[key] => {
                    return Err(Error::InvalidArgument(format!(
                        "resume: {key} was {} when saved and is {} now; the batches would differ",
                        short(v),
                        short(&now[key])
                    )))
                }
                Some(_) => {}
            }
        }
        let position: Position = saved
            .get("data.position")
            .ok_or_else(|| {
                Error::InvalidArgument("resume: the checkpoint has no data.position".into())
            })?
            .parse()?;
        if position.batch >= self.batches_per_epoch() {
            return Err(Error::InvalidArgument(format!(
                "resume: {position} is past the epoch's end"
            )));
        }
        Ok(position)
    }
}

fn short(s: &str) -> &str {
    &s[..s.len().min(16)]
}

impl Inner {
    fn order(&self, epoch: u64) -> Arc<Vec<usize>> {
        let mut orders = self.orders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, o)) = orders.iter().find(|(e, _)| *e == epoch) {
            return o.clone();
        }
        let n = self.dataset.len();
        let order = Arc::new(if self.config.shuffle {
            permutation(n, &mut Rng::derive(self.config.seed, &[EPOCH_ORDER, epoch]))
        } else {
            (0..n).collect()
        });
        // Workers straddle at most two epochs; keep a few.
        if orders.len() >= 4 {
            orders.remove(0);
        }
        orders.push((epoch, order.clone()));
        order
    }

    fn indices(&self, position: Position) -> Vec<usize> {
        let order = self.order(position.epoch);
        let b = self.config.batch_size;
        let start = (position.batch as usize * b).min(order.len());
        order[start..(start + b).min(order.len())].to_vec()
    }

    fn build(&self, position: Position) -> Result<Batch> {
        let (seed, epoch) = (self.config.seed, position.epoch);
        let stacked = stack(self.dataset.as_ref(), &self.indices(position), |index| {
            Rng::derive(seed, &[SAMPLE, epoch, index as u64])
        })?;
        let n = stacked.indices.len();
        let labels = match stacked.labels {
            Some(l) if self.dataset.classes().is_some() => {
                Some(Tensor::from_vec(l, n, &Device::Cpu)?)
            }
            _ => None,
        };
        let kept = stacked.indices;
        let images = stacked.images;
        let features = match &self.features {
            Some(cache) => Some(cache.gather(&kept)?),
            None => None,
        };
        Ok(Batch { images, labels, features, indices: kept, position })
    }
}

struct Claims {
    /// The next global batch number a worker may take.
    next_claim: u64,
    /// The next global batch number the consumer yields.
    next_yield: u64,
    stop: bool,
}

struct Shared {
    state: Mutex<Claims>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Claims> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type Built = (u64, Result<Batch>);

fn worker(
    inner: &Inner,
    shared: &Shared,
    sender: &mpsc::Sender<Built>,
    prefetch: u64,
    end: Option<u64>,
) {
    let bpe = batches_per_epoch(inner);
    loop {
        let g = {
            let mut s = shared.lock();
            loop {
                if s.stop || end.is_some_and(|e| s.next_claim >= e) {
                    return;
                }
                if s.next_claim < s.next_yield + prefetch {
                    break;
                }
                s = shared.wake.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            s.next_claim += 1;
            s.next_claim - 1
        };
        let position = Position { epoch: g / bpe, batch: g % bpe };
        let built =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.build(position)))
                .unwrap_or_else(|panic| {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    Err(Error::Loader(format!("a worker panicked while loading {position}: {msg}")))
                });
        if sender.send((g, built)).is_err() {
            return;
        }
    }
}

/// Batches in order, built ahead by background threads. Dropping it stops and joins them.
pub struct Stream {
    inner: Arc<Inner>,
    shared: Arc<Shared>,
    receiver: mpsc::Receiver<Built>,
    threads: Vec<JoinHandle<()>>,
    pending: BTreeMap<u64, Result<Batch>>,
    next: u64,
    end: Option<u64>,
    finished: bool,
}

impl Stream {
    /// The position of the next batch the stream yields: save it to resume there.
    pub fn next_position(&self) -> Position {
        let bpe = batches_per_epoch(&self.inner);
        Position { epoch: self.next / bpe, batch: self.next % bpe }
    }

    fn stop(&mut self) {
        self.finished = true;
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
    }
}

fn batches_per_epoch(inner: &Inner) -> u64 {
    let (n, b) = (inner.dataset.len(), inner.config.batch_size);
    (if inner.config.drop_last { n / b } else { n.div_ceil(b) }) as u64
}

impl Iterator for Stream {
    type Item = Result<Batch>;

    /// The next batch; a batch whose every sample was skipped is passed over. After an error
    /// the stream ends.
    fn next(&mut self) -> Option<Result<Batch>> {
        loop {
            if self.finished || self.end.is_some_and(|e| self.next >= e) {
                return None;
            }
            let built = match self.pending.remove(&self.next) {
                Some(b) => b,
                None => match self.receiver.recv() {
                    Ok((g, b)) => {
                        self.pending.insert(g, b);
                        continue;
                    }
                    Err(_) => {
                        self.stop();
                        return Some(Err(Error::Loader(format!(
                            "the workers stopped before {}",
                            self.next_position()
                        ))));
                    }
                },
            };
            self.next += 1;
            {
                self.shared.lock().next_yield = self.next;
            }
            self.shared.wake.notify_all();
            match built {
                Ok(batch) if batch.indices.is_empty() => continue,
                Ok(batch) => return Some(Ok(batch)),
                Err(e) => {
                    self.stop();
                    return Some(Err(e));
                }
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
