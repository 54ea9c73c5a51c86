pub mod mempool;
