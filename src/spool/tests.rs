use super::*;

#[test]
fn group_sync_covers_every_caller_and_shares_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let g = Arc::new(GroupSync::default());
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let g = g.clone();
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || g.sync(&path))
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    {
        let st = g.state.lock().unwrap();
        assert!(st.completed >= 1 && st.completed <= 16, "{st:?}");
        assert_eq!(st.started, st.completed);
        assert!(!st.running);
    }
    // A missing folder fails its caller, and the next caller syncs afresh.
    assert!(g.sync(&dir.path().join("missing")).is_err());
    assert!(g.sync(dir.path()).is_ok());
}

fn envelope() -> Envelope {
    let rcpts = vec![Recipient::new("bob@example.org", Some("bob".into()))];
    Envelope::new(
        "alice@example.org",
        rcpts,
        1_700_000_000,
        "[192.0.2.1]:1025",
        None,
    )
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = read_dir(dir)
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn body_of(spool: &Spool, id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    spool
        .body(id)
        .unwrap()
        .reader()
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[tokio::test]
async fn commit_makes_body_and_envelope_durable() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    let mut msg = spool.receive().await.unwrap();
    // Several buffer-fulls, written in odd-sized pieces.
    let body: Vec<u8> = (0..3 * WRITE_BUFFER + 17)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    for chunk in body.chunks(1000 + 7) {
        msg.write(chunk).await.unwrap();
    }
    assert_eq!(msg.size(), body.len() as u64);
    let id = msg.commit(envelope()).await.unwrap();
    assert!(entry::is_valid_id(&id));
    assert_eq!(body_of(&spool, &id), body);
    let loaded = spool.load(&id).unwrap();
    assert_eq!(
        (loaded.id.as_str(), loaded.size),
        (id.as_str(), body.len() as u64)
    );
    assert_eq!(spool.load_all().unwrap(), vec![loaded.clone()]);
    // What a restart finds: the same message, checked against its checksum.
    assert_eq!(
        inspect(&dir.path().join("spool")).unwrap(),
        vec![loaded.clone()]
    );
    let again = Spool::open(&dir.path().join("spool")).unwrap();
    assert_eq!(again.load_all().unwrap(), vec![loaded]);
    assert_eq!(body_of(&again, &id), body);
}

#[tokio::test]
async fn small_messages_touch_the_disk_once_and_reuse_slots() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    for round in 0..5 {
        let mut msg = spool.receive().await.unwrap();
        msg.write(format!("Subject: {round}\r\n\r\nhi\r\n").as_bytes())
            .await
            .unwrap();
        let id = msg.commit(envelope()).await.unwrap();
        let (env, body) = spool.open_message(&id, PRELOAD_LIMIT).unwrap();
        assert_eq!(env.size, body.len());
        assert_eq!(
            body.in_memory().unwrap(),
            format!("Subject: {round}\r\n\r\nhi\r\n").as_bytes()
        );
        spool.remove(&id).unwrap();
        assert!(!spool.contains(&id));
    }
    // One slot file served every message.
    assert_eq!(names(&spool.slots), vec!["0".to_string()]);
    assert!(Spool::open(dir.path()).unwrap().is_empty());
}

#[tokio::test]
async fn abort_and_drop_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut a = spool.receive().await.unwrap();
    a.write(&vec![b'x'; WRITE_BUFFER + 1]).await.unwrap();
    let mut b = spool.receive().await.unwrap();
    b.write(b"Subject: x\r\n\r\nhi\r\n").await.unwrap();
    assert_eq!(
        names(&spool.slots).len(),
        1,
        "only a flushed message takes a slot"
    );
    a.abort();
    drop(b);
    assert!(spool.is_empty());
    assert_eq!(spool.lock().free, vec![0]);
    assert!(
        Spool::open(dir.path())
            .unwrap()
            .load_all()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_fresh_small_message_is_handed_over_from_memory_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut msg = spool.receive().await.unwrap();
    msg.write(b"Subject: s\r\n\r\nx\r\n").await.unwrap();
    let id = msg.commit(envelope()).await.unwrap();
    let (env, body) = spool.take_recent(&id).expect("held in memory");
    assert_eq!((env.id.as_str(), env.size), (id.as_str(), body.len()));
    assert_eq!(body.in_memory().unwrap(), b"Subject: s\r\n\r\nx\r\n");
    assert!(spool.take_recent(&id).is_none(), "only once");
    // An updated envelope is never shadowed by the cached one.
    let mut msg = spool.receive().await.unwrap();
    msg.write(b"y\r\n").await.unwrap();
    let other = msg.commit(envelope()).await.unwrap();
    let mut env = spool.load(&other).unwrap();
    env.attempts = 1;
    spool.update(&env).unwrap();
    assert!(spool.take_recent(&other).is_none());
    // Detached messages are gone at once; freeing later releases the slot.
    let d = spool.detach(&id).unwrap();
    assert!(!spool.contains(&id) && spool.detach(&id).is_none());
    assert_eq!(spool.len(), 1);
    spool.free(d).unwrap();
    spool.remove(&other).unwrap();
    assert!(Spool::open(dir.path()).unwrap().is_empty());
    // A large message is not held in memory.
    let mut msg = spool.receive().await.unwrap();
    msg.write(&vec![b'z'; WRITE_BUFFER + 1]).await.unwrap();
    let big = msg.commit(envelope()).await.unwrap();
    assert!(spool.take_recent(&big).is_none());
}

#[test]
fn open_cleans_leftovers_and_stale_envelopes() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let kept = spool.enqueue_bytes(envelope(), b"kept\r\n").unwrap();
    fs::write(spool.tmp.join("half-written"), b"x").unwrap();
    let mut stale = envelope();
    stale.id = "1.2.3.4".into();
    fs::write(spool.envelope_path("1.2.3.4"), stale.to_bytes().unwrap()).unwrap();
    // A slot file torn by a crash before its fsync: not a message.
    fs::write(spool.slots.join("7"), b"MGSLOT01garbage").unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    assert!(names(&spool.tmp).is_empty());
    assert!(names(&spool.env).is_empty());
    assert_eq!(spool.load_all().unwrap().len(), 1);
    assert!(spool.contains(&kept));
    // The torn slot is free for reuse; new slots are numbered after the highest.
    assert_eq!(spool.lock().free, vec![7]);
    assert_eq!(spool.lock().next, 8);
}

#[test]
fn a_crash_that_undoes_the_free_marker_delivers_again() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let id = spool.enqueue_bytes(envelope(), b"once\r\n").unwrap();
    let slot = spool.slots.join("0");
    let before = fs::read(&slot).unwrap();
    spool.remove(&id).unwrap();
    assert!(Spool::open(dir.path()).unwrap().is_empty());
    // Put the old state word back, as if the unsynced marker never reached the disk.
    fs::write(&slot, &before).unwrap();
    let again = Spool::open(dir.path()).unwrap();
    assert!(again.contains(&id));
}

#[test]
fn unreadable_envelopes_are_moved_aside_without_losing_mail() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let good = spool.enqueue_bytes(envelope(), b"good\r\n").unwrap();
    let bad = spool.enqueue_bytes(envelope(), b"bad\r\n").unwrap();
    // An override that cannot be read: the accepted envelope is used, the file moved aside.
    let mut env = spool.load(&bad).unwrap();
    env.attempts = 2;
    spool.update(&env).unwrap();
    fs::write(spool.envelope_path(&bad), b"{\"version\": 1, \"id\": tru").unwrap();
    let loaded = spool.load(&bad).unwrap();
    assert_eq!((loaded.attempts, loaded.size), (0, 5));
    assert!(names(&dir.path().join("corrupt")).contains(&format!("{bad}.json")));

    // A slot whose envelope is of a future version: copied into corrupt/ at start-up.
    let future = spool.enqueue_bytes(envelope(), b"future\r\n").unwrap();
    let q = spool.queued(&future).unwrap();
    let path = spool.slot_path(q.slot);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let text = String::from_utf8(slot::read_envelope(&file, q.base, &q.header).unwrap()).unwrap();
    let json = text
        .replace("\"version\": 1", "\"version\": 2")
        .into_bytes();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(b"future\r\n");
    hasher.update(&json);
    let mut header = q.header.clone();
    header.env_len = json.len() as u32;
    header.crc = header.checksum(hasher);
    file.write_all_at(&json, header.env_offset()).unwrap();
    file.write_all_at(&header.encode(), 0).unwrap();

    let spool = Spool::open(dir.path()).unwrap();
    let mut ids: Vec<String> = spool
        .load_all()
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    ids.sort();
    assert_eq!(ids, vec![good, bad]);
    let corrupt = names(&dir.path().join("corrupt"));
    assert!(corrupt.contains(&future) && corrupt.contains(&format!("{future}.json")));
    assert_eq!(
        fs::read(dir.path().join("corrupt").join(&future)).unwrap(),
        b"future\r\n"
    );
}

#[test]
fn update_remove_and_move_out() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    let id = spool.enqueue_bytes(envelope(), b"hello\r\n").unwrap();
    let mut env = spool.load(&id).unwrap();
    assert_eq!(env.size, 7);
    env.attempts = 3;
    env.recipients[0].status = Status::Failed {
        code: 550,
        text: "no".into(),
    };
    spool.update(&env).unwrap();
    assert_eq!(spool.load(&id).unwrap(), env);
    assert_eq!(inspect(spool.root()).unwrap(), vec![env.clone()]);
    assert!(names(&spool.tmp).is_empty());
    // The newer envelope survives a restart.
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    assert_eq!(spool.load(&id).unwrap(), env);

    let dead = dir.path().join("dead");
    let moved = spool.move_out(&id, &dead).unwrap();
    assert_eq!(fs::read(moved).unwrap(), b"hello\r\n");
    let saved = fs::read(dead.join(format!("{id}.json"))).unwrap();
    assert_eq!(Envelope::parse(&saved).unwrap(), env);
    assert!(spool.load_all().unwrap().is_empty());
    assert!(matches!(spool.body(&id), Err(Error::NotFound(_))));
    assert!(names(&spool.env).is_empty());

    let other = spool.enqueue_bytes(envelope(), b"x").unwrap();
    spool.remove(&other).unwrap();
    spool.remove(&other).unwrap();
    assert!(matches!(spool.update(&env), Err(Error::NotFound(_))));
    assert!(spool.is_empty());
    assert!(inspect(spool.root()).unwrap().is_empty());
    assert!(
        inspect(&dir.path().join("nothing-here"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn large_freed_slots_give_their_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let big = vec![b'x'; TRUNCATE_ABOVE as usize + 1];
    let id = spool.enqueue_bytes(envelope(), &big).unwrap();
    let (_, body) = spool.open_message(&id, PRELOAD_LIMIT).unwrap();
    assert!(body.in_memory().is_none(), "a large body is read from disk");
    let mut read = Vec::new();
    body.reader().read_to_end(&mut read).unwrap();
    assert_eq!(read, big);
    spool.remove(&id).unwrap();
    assert_eq!(fs::metadata(spool.slots.join("0")).unwrap().len(), 0);
    let small = spool.enqueue_bytes(envelope(), b"small\r\n").unwrap();
    assert_eq!(body_of(&spool, &small), b"small\r\n");
}

#[test]
fn the_older_layout_is_converted() {
    let dir = tempfile::tempdir().unwrap();
    let (msg, env_dir) = (dir.path().join("msg"), dir.path().join("env"));
    fs::create_dir_all(&msg).unwrap();
    fs::create_dir_all(&env_dir).unwrap();
    let mut env = envelope();
    env.id = "1700000000.000001.000001.42".into();
    env.size = 7;
    env.attempts = 4;
    fs::write(msg.join(&env.id), b"old\r\n\r\n").unwrap();
    fs::write(
        env_dir.join(format!("{}.json", env.id)),
        env.to_bytes().unwrap(),
    )
    .unwrap();
    fs::write(msg.join("1.2.3"), b"never accepted").unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    assert_eq!(spool.load_all().unwrap(), vec![env.clone()]);
    assert_eq!(body_of(&spool, &env.id), b"old\r\n\r\n");
    assert!(!msg.exists());
    assert!(names(&env_dir).is_empty());
}

#[test]
fn ids_are_unique_sortable_and_checked() {
    let ids: Vec<String> = (0..1000).map(|_| new_id()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len());
    assert!(ids.iter().all(|id| entry::is_valid_id(id)));
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    for bad in ["../x", "", "a/b"] {
        assert!(matches!(spool.load(bad), Err(Error::InvalidId(_))));
        assert!(matches!(spool.remove(bad), Err(Error::InvalidId(_))));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_slots_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            let mut msg = spool.receive().await.unwrap();
            msg.write(format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes())
                .await
                .unwrap();
            (i, msg.commit(envelope()).await.unwrap())
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    assert_eq!(spool.len(), 40);
    let slots = names(&spool.slots).len();
    assert!(slots <= 40, "{slots} slot files");
    // A restart finds every message, with its own body.
    let again = Spool::open(dir.path()).unwrap();
    assert_eq!(again.len(), 40);
    for (i, id) in &ids {
        assert_eq!(
            body_of(&again, id),
            format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes()
        );
    }
    // Freed records are stepped over: removing every other message leaves the rest findable.
    for (i, id) in &ids {
        if i % 2 == 0 {
            again.remove(id).unwrap();
        }
    }
    let third = Spool::open(dir.path()).unwrap();
    assert_eq!(third.len(), 20);
    for (i, id) in &ids {
        assert_eq!(third.contains(id), i % 2 == 1, "{id}");
    }
    // Once every record of a slot is freed, the slot is free for the next batch.
    for (_, id) in &ids {
        third.remove(id).unwrap();
    }
    assert!(third.is_empty());
    assert_eq!(third.lock().free.len(), slots);
    assert!(third.lock().live.is_empty());
    assert!(Spool::open(dir.path()).unwrap().is_empty());
}

/// Starts receiving a small message with `text` as its body.
async fn receiving(spool: &Spool, text: &str) -> Incoming {
    let mut msg = spool.receive().await.unwrap();
    msg.write(text.as_bytes()).await.unwrap();
    msg
}

/// Commits `msg` on its own task, as a session would.
fn commit_in_background(msg: Incoming) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move { msg.commit(envelope()).await.unwrap() })
}

/// Waits for a commit that must complete (a wait that never ends fails the test instead of
/// hanging it).
async fn committed(task: tokio::task::JoinHandle<String>) -> String {
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the commit completes")
        .unwrap()
}

/// Gives a waiting commit the chance to finish if it wrongly would.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_commit_waits_for_messages_still_being_received() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    // A window far longer than the test: whatever completes did not wait it out.
    spool.set_commit_window(Duration::from_secs(3600));

    // A lone sender does not wait.
    let lone = receiving(&spool, "Subject: lone\r\n\r\nhi\r\n").await;
    committed(commit_in_background(lone)).await;

    // The first commit waits for the message still being received; both share one batch.
    let a = receiving(&spool, "Subject: a\r\n\r\nhi\r\n").await;
    let b = receiving(&spool, "Subject: b\r\n\r\nhi\r\n").await;
    let first = commit_in_background(a);
    settle().await;
    assert!(!first.is_finished(), "the batch waits for b");
    let second = committed(commit_in_background(b)).await;
    let first = committed(first).await;
    let (qa, qb) = (
        spool.queued(&first).unwrap(),
        spool.queued(&second).unwrap(),
    );
    assert_eq!(qa.slot, qb.slot, "one batch, one slot");
    assert_ne!(qa.base, qb.base);

    // A message dropped, or grown too large for the group commit, no longer holds it up.
    let c = receiving(&spool, "Subject: c\r\n\r\nhi\r\n").await;
    let d = receiving(&spool, "Subject: d\r\n\r\nhi\r\n").await;
    let waiting = commit_in_background(c);
    settle().await;
    assert!(!waiting.is_finished());
    drop(d);
    committed(waiting).await;

    let e = receiving(&spool, "Subject: e\r\n\r\nhi\r\n").await;
    let mut f = receiving(&spool, "Subject: f\r\n\r\n").await;
    let waiting = commit_in_background(e);
    settle().await;
    assert!(!waiting.is_finished());
    f.write(&vec![b'x'; WRITE_BUFFER]).await.unwrap();
    committed(waiting).await;
    committed(commit_in_background(f)).await;

    // With the window off, nothing waits.
    spool.set_commit_window(Duration::ZERO);
    let g = receiving(&spool, "Subject: g\r\n\r\nhi\r\n").await;
    let _h = receiving(&spool, "Subject: h\r\n\r\nhi\r\n").await;
    committed(commit_in_background(g)).await;
    assert_eq!(spool.len(), 7);
    assert_eq!(spool.lock().receiving, 1, "h is still being received");
}

#[test]
fn a_batch_torn_by_a_crash_is_not_delivered_and_older_records_stay_freed() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let a = spool.enqueue_bytes(envelope(), b"first\r\n").unwrap();
    spool.remove(&a).unwrap();
    // A later batch overwrote the slot's start but its fsync never completed: the checksum
    // fails and nothing after it counts, not even the freed record's old bytes.
    let path = spool.slots.join("0");
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    let mut batch = Vec::new();
    slot::encode_record(&mut batch, "9.9.9", b"torn body\r\n", b"{}");
    batch[slot::HEADER_LEN as usize] ^= 0xff;
    file.write_all_at(&batch, 0).unwrap();
    assert!(Spool::open(dir.path()).unwrap().is_empty());
}

#[test]
fn open_slot_files_are_bounded_and_every_message_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let n = OPEN_SLOTS + 40;
    let ids: Vec<String> = (0..n)
        .map(|i| {
            spool
                .enqueue_bytes(envelope(), format!("body {i}\r\n").as_bytes())
                .unwrap()
        })
        .collect();
    assert_eq!(names(&spool.slots).len(), n, "one slot each");
    assert!(spool.lock().files.len() <= OPEN_SLOTS);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(body_of(&spool, id), format!("body {i}\r\n").as_bytes());
        assert!(spool.lock().files.len() <= OPEN_SLOTS);
    }
    for id in &ids {
        spool.remove(id).unwrap();
    }
    assert!(spool.is_empty());
    assert!(spool.lock().files.len() <= OPEN_SLOTS);
    // A freed slot is reused through its cached file.
    let again = spool.enqueue_bytes(envelope(), b"again\r\n").unwrap();
    assert_eq!(body_of(&spool, &again), b"again\r\n");
    assert_eq!(names(&spool.slots).len(), n);
}

#[test]
fn the_gauge_follows_the_depth_and_a_drained_index_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let gauge = spool.gauge();
    spool.set_max_queue(3);
    let mut ids = Vec::new();
    for _ in 0..3 {
        assert!(!gauge.is_full());
        ids.push(spool.enqueue_bytes(envelope(), b"x\r\n").unwrap());
    }
    assert!(gauge.is_full());
    spool.remove(&ids.pop().unwrap()).unwrap();
    assert!(!gauge.is_full());
    // Raised or lowered while running (at start, after the scan), it applies at once.
    spool.set_max_queue(2);
    assert!(gauge.is_full());
    spool.set_max_queue(100_000);

    for _ in 0..4000 {
        ids.push(spool.enqueue_bytes(envelope(), b"x\r\n").unwrap());
    }
    let grown = spool.lock().queued.capacity();
    for id in ids.drain(..) {
        spool.remove(&id).unwrap();
    }
    assert!(spool.is_empty());
    let left = spool.lock().queued.capacity();
    assert!(grown > 4096 && left <= 4096, "capacity {grown} then {left}");
}

#[test]
fn the_oldest_arrival_comes_from_the_ids() {
    let cases = [
        (
            "1700000000.250000.000001.42",
            Some((1_700_000_000, 250_000)),
        ),
        ("0000000005.000001.000001.1", Some((5, 1))),
        ("1700000000.25.000001.42", None),
        ("bounce-1", None),
        ("", None),
    ];
    for (id, want) in cases {
        let want =
            want.map(|(s, us)| UNIX_EPOCH + Duration::from_secs(s) + Duration::from_micros(us));
        assert_eq!(arrival(id), want, "{id}");
    }
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    assert_eq!(spool.oldest_arrival(), None);
    let first = spool.enqueue_bytes(envelope(), b"first\r\n").unwrap();
    let second = spool.enqueue_bytes(envelope(), b"second\r\n").unwrap();
    assert!(arrival(&first) <= arrival(&second));
    assert_eq!(spool.oldest_arrival(), arrival(&first));
    spool.remove(&first).unwrap();
    assert_eq!(spool.oldest_arrival(), arrival(&second));
}
