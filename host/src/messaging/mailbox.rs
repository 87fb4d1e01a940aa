//! One agent's mailbox: a bounded queue with many senders and one receiver.
//!
//! Written here rather than taken from tokio's `mpsc` for what an agent host needs of it: an
//! empty mailbox holds no buffer (tokio's allocates a block of 32 slots, 2.3 KiB of messages,
//! at creation, which a hibernated agent would keep for as long as it sleeps), a drained one can
//! give its buffer back ([`Receiver::compact`]), and a sender wakes the receiver only when it
//! waits (not while its agent is busy). The queue sits behind a mutex held for a push or a pop
//! only; the receiver's waker is kept beside it, and taken by the sender that wakes it.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::sync::Notify;

use super::Message;

/// Why a send did not enqueue; the message comes back.
#[derive(Debug)]
pub enum SendError {
    /// The mailbox holds as many messages as it may.
    Full(Message),
    /// The receiver has closed it (its agent exited).
    Closed(Message),
}

/// Why nothing was taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Empty {
    /// Nothing queued now.
    Now,
    /// Nothing queued, and nothing ever will be: closed.
    Closed,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Told when a full mailbox gets room, or closes: senders waiting for room look again.
    room: Notify,
    capacity: usize,
    /// Payload bytes queued, counted by the router against its byte bound.
    bytes: AtomicUsize,
}

struct Queue {
    messages: VecDeque<Message>,
    /// The receiver, when it waits for a message.
    waiting: Option<Waker>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while the lock is held leaves the queue whole (every change is one call).
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A mailbox of at most `capacity` messages (at least one).
pub fn mailbox(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue { messages: VecDeque::new(), waiting: None, closed: false }),
        room: Notify::new(),
        capacity: capacity.max(1),
        bytes: AtomicUsize::new(0),
    });
    (Sender(shared.clone()), Receiver(shared))
}

#[derive(Clone)]
pub struct Sender(Arc<Shared>);

impl Sender {
    pub fn try_send(&self, message: Message) -> Result<(), SendError> {
        let mut queue = self.0.lock();
        if queue.closed {
            return Err(SendError::Closed(message));
        }
        if queue.messages.len() >= self.0.capacity {
            return Err(SendError::Full(message));
        }
        queue.messages.push_back(message);
        let waiting = queue.waiting.take();
        drop(queue);
        if let Some(receiver) = waiting {
            receiver.wake();
        }
        Ok(())
    }

    /// Send, waiting up to `timeout` for room.
    pub async fn send_timeout(&self, mut message: Message, timeout: Duration) -> Result<(), SendError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the attempt: room made between the two is not missed.
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            message = match self.try_send(message) {
                Err(SendError::Full(message)) => message,
                sent_or_closed => return sent_or_closed,
            };
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(SendError::Full(message));
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        self.0.lock().closed
    }

    pub(super) fn bytes(&self) -> &AtomicUsize {
        &self.0.bytes
    }
}

pub struct Receiver(Arc<Shared>);

impl Receiver {
    pub fn try_recv(&mut self) -> Result<Message, Empty> {
        self.try_recv_counted().map(|(message, _)| message)
    }

    /// As [`Receiver::try_recv`], with how many messages are left behind it (read under the
    /// same lock: whether a batch is worth starting costs nothing more).
    pub fn try_recv_counted(&mut self) -> Result<(Message, usize), Empty> {
        let queue = self.0.lock();
        self.pop(queue)
    }

    /// The next message; None once the mailbox is closed and empty. Cancel-safe: a message is
    /// taken only by the poll that returns it.
    pub async fn recv(&mut self) -> Option<Message> {
        self.recv_counted().await.map(|(message, _)| message)
    }

    /// As [`Receiver::recv`], with how many messages are left behind it.
    pub async fn recv_counted(&mut self) -> Option<(Message, usize)> {
        poll_fn(|context| {
            let mut queue = self.0.lock();
            if queue.messages.is_empty() && !queue.closed {
                if !queue.waiting.as_ref().is_some_and(|waker| waker.will_wake(context.waker())) {
                    queue.waiting = Some(context.waker().clone());
                }
                return Poll::Pending;
            }
            Poll::Ready(self.pop(queue).ok())
        })
        .await
    }

    /// The first message and how many are left, the lock released before a waiting sender is
    /// told of the room.
    fn pop(&self, mut queue: MutexGuard<'_, Queue>) -> Result<(Message, usize), Empty> {
        let was_full = queue.messages.len() >= self.0.capacity;
        match queue.messages.pop_front() {
            Some(message) => {
                let left = queue.messages.len();
                drop(queue);
                if was_full {
                    self.0.room.notify_waiters();
                }
                Ok((message, left))
            }
            None if queue.closed => Err(Empty::Closed),
            None => Err(Empty::Now),
        }
    }

    pub fn len(&self) -> usize {
        self.0.lock().messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.lock().messages.is_empty()
    }

    /// Refuse every send from now on; what is queued stays to be taken.
    pub fn close(&mut self) {
        self.0.lock().closed = true;
        self.0.room.notify_waiters();
    }

    /// Give back the buffer of a drained mailbox (a burst grew it; an agent about to sleep
    /// should not keep it).
    pub fn compact(&mut self) {
        let mut queue = self.0.lock();
        if queue.messages.is_empty() {
            queue.messages = VecDeque::new();
        }
    }

    pub(super) fn bytes(&self) -> &AtomicUsize {
        &self.0.bytes
    }
}

impl Drop for Receiver {
    /// As a dropped agent task's mailbox: closed, and what was queued dropped (callers waiting
    /// on a reply see their channel close: `stopped`).
    fn drop(&mut self) {
        let dropped = {
            let mut queue = self.0.lock();
            queue.closed = true;
            std::mem::take(&mut queue.messages)
        };
        self.0.room.notify_waiters();
        drop(dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(n: u8) -> Message {
        Message::cast(None, vec![n])
    }

    fn number(message: Message) -> u8 {
        match message.body {
            super::super::Body::Bytes(bytes) => bytes[0],
            super::super::Body::Notice(_) => panic!("a notice"),
        }
    }

    #[test]
    fn it_is_bounded_ordered_and_closes() {
        let (sender, mut receiver) = mailbox(2);
        sender.try_send(numbered(1)).unwrap();
        sender.try_send(numbered(2)).unwrap();
        assert!(matches!(sender.try_send(numbered(3)), Err(SendError::Full(_))));
        assert_eq!(receiver.len(), 2);
        assert_eq!(number(receiver.try_recv().unwrap()), 1);
        sender.try_send(numbered(3)).unwrap();
        receiver.close();
        assert!(matches!(sender.try_send(numbered(4)), Err(SendError::Closed(_))));
        assert!(sender.is_closed());
        // What was queued before the close is still taken, in order.
        assert_eq!(number(receiver.try_recv().unwrap()), 2);
        assert_eq!(number(receiver.try_recv().unwrap()), 3);
        assert_eq!(receiver.try_recv().unwrap_err(), Empty::Closed);
    }

    #[test]
    fn an_empty_mailbox_holds_no_buffer_and_a_drained_one_gives_it_back() {
        let (sender, mut receiver) = mailbox(1024);
        assert_eq!(receiver.0.lock().messages.capacity(), 0);
        for n in 0..100 {
            sender.try_send(numbered(n)).unwrap();
        }
        assert!(receiver.0.lock().messages.capacity() >= 100);
        while receiver.try_recv().is_ok() {}
        receiver.compact();
        assert_eq!(receiver.0.lock().messages.capacity(), 0);
    }

    #[test]
    fn a_waiting_receiver_is_woken_and_a_waiting_sender_gets_room() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let (sender, mut receiver) = mailbox(1);
            let consumer = tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(message) = receiver.recv().await {
                    got.push(number(message));
                    if got.len() == 200 {
                        break;
                    }
                }
                got
            });
            // Capacity one: every send after the first waits for the receiver to make room.
            for n in 0..200 {
                sender.send_timeout(numbered(n), Duration::from_secs(30)).await.unwrap();
            }
            assert_eq!(consumer.await.unwrap(), (0..200).collect::<Vec<_>>());
            // The receiver is gone: a send finds it closed, not full.
            assert!(matches!(
                sender.send_timeout(numbered(0), Duration::from_secs(30)).await,
                Err(SendError::Closed(_))
            ));
        });
    }

    #[test]
    fn a_send_that_finds_no_room_in_time_gives_the_message_back() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (sender, _receiver) = mailbox(1);
            sender.try_send(numbered(1)).unwrap();
            match sender.send_timeout(numbered(2), Duration::from_millis(20)).await {
                Err(SendError::Full(message)) => assert_eq!(number(message), 2),
                other => panic!("{other:?}"),
            }
        });
    }
}
