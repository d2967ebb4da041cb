//! Micro-batching: callers each ask for one thing; a task takes whatever
//! requests are waiting (at most `max`) and serves them with one call, so
//! under load many claims or finishes share one transaction, while a lone
//! request goes out at once (no timer, no added latency). Up to `parallel`
//! batches are in flight at a time.

use std::future::Future;

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

type Request<Req, Resp> = (Req, oneshot::Sender<Resp>);

pub struct Batcher<Req, Resp> {
    sender: mpsc::UnboundedSender<Request<Req, Resp>>,
}

impl<Req, Resp> Clone for Batcher<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// Spawns the serving task; `serve` gets a batch and returns one response
    /// per request, in order. The task ends when every `Batcher` is dropped.
    pub fn spawn<F, Fut>(max: usize, parallel: usize, mut serve: F) -> Self
    where
        F: FnMut(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Resp>> + Send + 'static,
    {
        let (sender, mut receiver) = mpsc::unbounded_channel::<Request<Req, Resp>>();
        let slots = Arc::new(Semaphore::new(parallel.max(1)));
        tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                // Whatever queued up while we waited for a slot joins this batch.
                let mut batch = vec![first];
                while batch.len() < max {
                    match receiver.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                let (requests, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                let served = serve(requests);
                tokio::spawn(async move {
                    let responses = served.await;
                    debug_assert_eq!(responses.len(), replies.len());
                    for (reply, response) in replies.into_iter().zip(responses) {
                        let _ = reply.send(response);
                    }
                    drop(slot);
                });
            }
        });
        Self { sender }
    }

    /// `None` only if the serving task is gone.
    pub async fn call(&self, request: Req) -> Option<Resp> {
        let (reply, response) = oneshot::channel();
        self.sender.send((request, reply)).ok()?;
        response.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_calls_share_batches_and_each_gets_its_own_answer() {
        let sizes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let doubler = Batcher::spawn(8, 2, move |batch: Vec<u32>| {
            seen.lock().unwrap().push(batch.len());
            async move {
                tokio::task::yield_now().await;
                batch.into_iter().map(|n| n * 2).collect()
            }
        });
        let calls = (0..20u32).map(|n| {
            let doubler = doubler.clone();
            tokio::spawn(async move { (n, doubler.call(n).await) })
        });
        for call in futures::future::join_all(calls).await {
            let (n, doubled) = call.unwrap();
            assert_eq!(doubled, Some(n * 2));
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 20);
        assert!(sizes.iter().all(|&s| s <= 8), "{sizes:?}");
    }
}
