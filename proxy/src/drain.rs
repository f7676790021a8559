//! One drain signal for the whole process: accept loops stop accepting and connections
//! finish their in-flight streams when it fires.

use tokio::sync::watch;

#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<bool>,
}

#[derive(Debug, Clone)]
pub struct DrainWatch {
    rx: watch::Receiver<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            tx: watch::channel(false).0,
        }
    }
}

impl Drain {
    pub fn watch(&self) -> DrainWatch {
        DrainWatch {
            rx: self.tx.subscribe(),
        }
    }

    pub fn start(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.tx.borrow()
    }
}

impl DrainWatch {
    /// Resolves once draining has started (immediately if it already has).
    pub async fn signaled(&mut self) {
        let _ = self.rx.wait_for(|d| *d).await;
    }

    pub fn is_draining(&self) -> bool {
        *self.rx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchers_see_the_signal_even_if_late() {
        let d = Drain::default();
        let mut w = d.watch();
        assert!(!w.is_draining());
        d.start();
        w.signaled().await;
        let mut late = d.watch();
        late.signaled().await;
        assert!(d.is_draining());
    }
}
