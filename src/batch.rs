//! Batching for the background workers (the audit trail and the login recorder): the request
//! threads queue items without waiting, and one worker takes them in batches, so a busy login
//! path costs the store one transaction per batch instead of one per login.
//!
//! Owns the queue between the two sides and how a batch gathers. The worker sleeps while a
//! batch gathers instead of waking for every item: a wake-up per item cost the request threads
//! a system call each and the machine a context switch. A flush cuts the sleep short, and a
//! worker that is behind (its last batch was full) does not sleep at all, so sleeping can never
//! make it fall further behind.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};

enum Queued<T> {
    Item(T),
    /// Answered once every item queued before it has been handled.
    Flush(oneshot::Sender<()>),
}

/// The request threads' side: queues items, asks for flushes.
pub(crate) struct BatchQueue<T> {
    sender: mpsc::Sender<Queued<T>>,
    flush_requested: Arc<Notify>,
}

// Not derived: a derive would require `T: Clone`.
impl<T> Clone for BatchQueue<T> {
    fn clone(&self) -> Self {
        BatchQueue {
            sender: self.sender.clone(),
            flush_requested: self.flush_requested.clone(),
        }
    }
}

/// The worker's side: takes the queued items in batches.
pub(crate) struct Gatherer<T> {
    inbox: mpsc::Receiver<Queued<T>>,
    flush_requested: Arc<Notify>,
    window: Duration,
    max_batch: usize,
    behind: bool,
}

/// What a worker gets from [`Gatherer::next`].
pub(crate) enum Next<T> {
    Batch(Batch<T>),
    /// Nothing arrived within the idle time.
    Idle,
    /// Every [`BatchQueue`] is gone and the queue is empty.
    Closed,
}

/// Items to handle together, and the flushes to answer once they are handled.
pub(crate) struct Batch<T> {
    pub items: Vec<T>,
    flushes: Vec<oneshot::Sender<()>>,
}

impl<T> Batch<T> {
    /// Whether anyone waits for this batch (a worker may want to finish more work first).
    pub(crate) fn is_flush(&self) -> bool {
        !self.flushes.is_empty()
    }

    /// Tells every waiting [`BatchQueue::flush`] that the batch is handled.
    pub(crate) fn answer_flushes(self) {
        for done in self.flushes {
            let _ = done.send(());
        }
    }
}

/// A queue of at most `capacity` items whose worker gathers each batch for up to `window`,
/// and at most `max_batch` items.
pub(crate) fn queue<T>(
    capacity: usize,
    window: Duration,
    max_batch: usize,
) -> (BatchQueue<T>, Gatherer<T>) {
    let (sender, inbox) = mpsc::channel(capacity.max(1));
    let flush_requested = Arc::new(Notify::new());
    (
        BatchQueue {
            sender,
            flush_requested: flush_requested.clone(),
        },
        Gatherer {
            inbox,
            flush_requested,
            window,
            max_batch: max_batch.max(1),
            behind: false,
        },
    )
}

impl<T> BatchQueue<T> {
    /// Queues an item without waiting; gives it back when the queue is full or the worker gone.
    pub(crate) fn try_push(&self, item: T) -> Result<(), T> {
        match self.sender.try_send(Queued::Item(item)) {
            Ok(()) => Ok(()),
            Err(
                mpsc::error::TrySendError::Full(Queued::Item(item))
                | mpsc::error::TrySendError::Closed(Queued::Item(item)),
            ) => Err(item),
            // Only items are sent here.
            Err(_) => unreachable!("try_push sends only items"),
        }
    }

    /// Waits until every item queued before this call has been handled (returns at once if
    /// the worker is gone).
    pub(crate) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Queued::Flush(done)).await.is_ok() {
            self.flush_requested.notify_one();
            let _ = wait.await;
        }
    }
}

impl<T> Gatherer<T> {
    /// The next batch: waits for a first item (at most `idle`, if given), then gathers. Nothing
    /// received is lost if the caller drops this future while it waits for the first item.
    pub(crate) async fn next(&mut self, idle: Option<Duration>) -> Next<T> {
        let first = match idle {
            Some(idle) => match tokio::time::timeout(idle, self.inbox.recv()).await {
                Ok(first) => first,
                Err(_) => return Next::Idle,
            },
            None => self.inbox.recv().await,
        };
        match first {
            Some(first) => Next::Batch(self.gather(first).await),
            None => Next::Closed,
        }
    }

    async fn gather(&mut self, first: Queued<T>) -> Batch<T> {
        if !self.behind && matches!(first, Queued::Item(_)) {
            tokio::select! {
                () = tokio::time::sleep(self.window) => {}
                () = self.flush_requested.notified() => {}
            }
        }
        let mut batch = Batch {
            items: Vec::new(),
            flushes: Vec::new(),
        };
        let mut next = Some(first);
        while let Some(queued) = next.take() {
            match queued {
                Queued::Item(item) => batch.items.push(item),
                Queued::Flush(done) => batch.flushes.push(done),
            }
            // A flush ends the batch: its caller waits only for what came before it.
            if batch.items.len() >= self.max_batch || batch.is_flush() {
                break;
            }
            next = self.inbox.try_recv().ok();
        }
        self.behind = batch.items.len() >= self.max_batch;
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn items_gather_into_bounded_batches_and_flushes_end_them() {
        let (queue, mut gatherer) = queue::<u32>(100, Duration::from_millis(100), 3);
        for i in 0..5 {
            queue.try_push(i).unwrap();
        }
        let Next::Batch(first) = gatherer.next(None).await else {
            panic!("expected a batch");
        };
        assert_eq!(first.items, vec![0, 1, 2]);
        assert!(!first.is_flush());
        // The worker was behind: the rest comes without a gathering sleep.
        let started = tokio::time::Instant::now();
        let Next::Batch(second) = gatherer.next(None).await else {
            panic!("expected a batch");
        };
        assert_eq!(second.items, vec![3, 4]);
        assert_eq!(started.elapsed(), Duration::ZERO);

        let flusher = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.flush().await })
        };
        queue.try_push(5).ok();
        tokio::task::yield_now().await;
        let Next::Batch(third) = gatherer.next(None).await else {
            panic!("expected a batch");
        };
        assert_eq!(third.items, vec![5]);
        assert!(third.is_flush());
        assert!(!flusher.is_finished());
        third.answer_flushes();
        flusher.await.unwrap();
        assert!(matches!(
            gatherer.next(Some(Duration::from_secs(1))).await,
            Next::Idle
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_gives_the_item_back_and_a_closed_queue_ends_the_worker() {
        let (queue, mut gatherer) = queue::<u32>(1, Duration::from_millis(100), 8);
        queue.try_push(1).unwrap();
        assert_eq!(queue.try_push(2), Err(2));
        drop(queue);
        assert!(matches!(gatherer.next(None).await, Next::Batch(b) if b.items == vec![1]));
        assert!(matches!(gatherer.next(None).await, Next::Closed));
    }
}
