//! What `Store::open` costs on a store of a million commands: a measurement, not a check
//! (no assertion on time). Run it in release:
//! `cargo test --release --all-features --test open_cost -- --ignored --nocapture`
//! (`AIROMEM_OPEN_COST_COMMANDS` changes the count; `AIROMEM_OPEN_COST_DIR` puts the store
//! on another disk).

use std::time::{Duration, Instant};

use airomem::{Durability, PostcardSerializer, PostcardStore, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand, token};

#[test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
fn open_cost_of_a_million_command_store() {
    let commands: u64 = std::env::var("AIROMEM_OPEN_COST_COMMANDS").map_or(1_000_000, |n| n.parse().expect("a count"));
    let parent = std::env::var("AIROMEM_OPEN_COST_DIR").map_or_else(|_| std::env::temp_dir(), Into::into);
    let tmp = tempfile::tempdir_in(parent).expect("tempdir");
    let dir = tmp.path().join("store");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    runtime.block_on(async {
        let options = StoreOptions::default().durability(Durability::OsBuffered);
        let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, &dir, options).await.expect("open");
        airomem_workspace::commit_from_64_tasks(&store, commands, |n| SessionsCommand::CreateSession {
            token: token(n),
            user_id: n,
        })
        .await;
        store.close().await.expect("close");

        let mut opens = Vec::new();
        for _ in 0..9 {
            let started = Instant::now();
            let store: PostcardStore<Sessions> = Store::open(PostcardSerializer, &dir).await.expect("reopen");
            opens.push(started.elapsed());
            assert_eq!(store.query().expect("query").tokens.len() as u64, commands);
            store.close().await.expect("close");
        }
        opens.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "open of {commands} commands: median {:.1} ms (min {:.1}, max {:.1}) over {} opens",
            ms(opens[opens.len() / 2]),
            ms(opens[0]),
            ms(opens[opens.len() - 1]),
            opens.len()
        );
    });
}
