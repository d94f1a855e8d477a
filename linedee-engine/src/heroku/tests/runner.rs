//! Exits, slots, `alive` and logs.

use super::*;

#[tokio::test]
async fn an_exit_is_seen_once_when_the_dyno_leaves_the_list() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DYNOS))
        .and(body_partial_json(
            json!({"env": {"line_D": r#"{"task_id":"t.1.0"}"#}}),
        ))
        .respond_with(created("d-1", "run.1"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(DYNOS))
        .and(body_partial_json(
            json!({"env": {"line_D": r#"{"task_id":"t.2.0"}"#}}),
        ))
        .respond_with(created("d-2", "run.2"))
        .mount(&server)
        .await;
    let (listed, mut served) = mount_list(&server).await;
    listed
        .lock()
        .expect("lock")
        .push(dyno("d-1", "run.1", "up"));
    let runner = HerokuRunner::new(config(&server).list_interval(POLL));
    let calls = Arc::new(AtomicUsize::new(0));
    let (f, mut exited) = on_exit(&calls);
    runner
        .start(spec("t.1.0", 1), CancellationToken::new(), f)
        .await
        .expect("started");
    // Listed `up`: no exit.
    tokio::time::timeout(DEADLINE, served.recv())
        .await
        .expect("a list");
    assert!(exited.try_recv().is_err(), "no exit while the dyno is up");
    assert_eq!(runner.alive("d-1").await, Some(true));

    // A second dyno keeps the poll loop listing after the first one's exit.
    runner
        .start(spec("t.2.0", 1), CancellationToken::new(), ignore_exit())
        .await
        .expect("started");
    *listed.lock().expect("lock") = vec![dyno("d-2", "run.2", "up")];
    let exit = tokio::time::timeout(DEADLINE, exited)
        .await
        .expect("the exit in time")
        .expect("an exit");
    assert_eq!(exit.code, None);
    assert_eq!(exit.detail.as_deref(), Some("dyno run.1 is gone"));
    assert_eq!(runner.alive("d-1").await, Some(false));
    // Two more lists without it: still one call.
    while served.try_recv().is_ok() {}
    for _ in 0..2 {
        tokio::time::timeout(DEADLINE, served.recv())
            .await
            .expect("a list");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    runner.stop_all().await;
}

#[tokio::test]
async fn a_crashed_dyno_has_exited() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DYNOS))
        .respond_with(created("d-1", "run.1"))
        .mount(&server)
        .await;
    let (listed, _served) = mount_list(&server).await;
    listed
        .lock()
        .expect("lock")
        .push(dyno("d-1", "run.1", "crashed"));
    let runner = HerokuRunner::new(config(&server).list_interval(POLL));
    let calls = Arc::new(AtomicUsize::new(0));
    let (f, exited) = on_exit(&calls);
    runner
        .start(spec("t.1.0", 1), CancellationToken::new(), f)
        .await
        .expect("started");
    let exit = tokio::time::timeout(DEADLINE, exited)
        .await
        .expect("the exit in time")
        .expect("an exit");
    assert_eq!(
        exit,
        Exit {
            code: None,
            detail: Some("dyno run.1 ended (state crashed)".to_owned()),
            log: None,
        }
    );
}

#[tokio::test]
async fn with_one_slot_a_second_start_waits_for_the_first_exit() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DYNOS))
        .and(body_partial_json(
            json!({"env": {"line_D": r#"{"task_id":"t.1.0"}"#}}),
        ))
        .respond_with(created("d-1", "run.1"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(DYNOS))
        .and(body_partial_json(
            json!({"env": {"line_D": r#"{"task_id":"t.2.0"}"#}}),
        ))
        .respond_with(created("d-2", "run.2"))
        .mount(&server)
        .await;
    let (listed, mut served) = mount_list(&server).await;
    listed
        .lock()
        .expect("lock")
        .push(dyno("d-1", "run.1", "up"));
    let runner = Arc::new(HerokuRunner::new(
        config(&server).max_dynos(1).list_interval(POLL),
    ));
    let calls = Arc::new(AtomicUsize::new(0));
    let (f, exited) = on_exit(&calls);
    runner
        .start(spec("t.1.0", 1), CancellationToken::new(), f)
        .await
        .expect("started");
    let second = {
        let runner = Arc::clone(&runner);
        tokio::spawn(async move {
            runner
                .start(spec("t.2.0", 1), CancellationToken::new(), ignore_exit())
                .await
        })
    };
    let mut second = std::pin::pin!(second);
    // The list shows the first dyno up twice: the second start still waits, unsent.
    for _ in 0..2 {
        tokio::time::timeout(DEADLINE, served.recv())
            .await
            .expect("a list");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut second)
            .await
            .is_err(),
        "the second start waits for a slot"
    );
    assert_eq!(requests(&server, "POST", DYNOS).await, 1);

    listed.lock().expect("lock").clear();
    tokio::time::timeout(DEADLINE, exited)
        .await
        .expect("the exit in time")
        .expect("an exit");
    let reference = tokio::time::timeout(DEADLINE, second)
        .await
        .expect("the second start in time")
        .expect("joined")
        .expect("started");
    assert_eq!(reference, "d-2");
    assert_eq!(requests(&server, "POST", DYNOS).await, 2);
}

#[tokio::test]
async fn a_start_waiting_for_a_slot_is_cancellable() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DYNOS))
        .respond_with(created("d-1", "run.1"))
        .mount(&server)
        .await;
    let runner = HerokuRunner::new(config(&server).max_dynos(1));
    runner
        .start(spec("t.1.0", 1), CancellationToken::new(), ignore_exit())
        .await
        .expect("started");
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = runner
        .start(spec("t.2.0", 1), cancel, ignore_exit())
        .await
        .expect_err("cancelled");
    assert!(matches!(err, StartError::Cancelled), "{err:?}");
    assert_eq!(requests(&server, "POST", DYNOS).await, 1);
}

#[tokio::test]
async fn the_log_comes_from_a_log_session_without_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DYNOS))
        .respond_with(created("d-1", "run.7"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/apps/demo/log-sessions"))
        .and(header("Authorization", format!("Bearer {TOKEN}").as_str()))
        .and(body_partial_json(
            json!({"dyno": "run.7", "lines": 1500, "source": "app", "tail": false}),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "s-1",
            "logplex_url": format!("{}/logplex/s-1?sig=abc", server.uri()),
        })))
        .expect(1)
        .mount(&server)
        .await;
    let lines = "2026-01-01T00:00:00+00:00 app[run.7]: hello\n";
    Mock::given(method("GET"))
        .and(path("/logplex/s-1"))
        .respond_with(ResponseTemplate::new(200).set_body_string(lines))
        .expect(1)
        .mount(&server)
        .await;
    let runner = HerokuRunner::new(config(&server));
    runner
        .start(spec("t.1.0", 2), CancellationToken::new(), ignore_exit())
        .await
        .expect("started");
    let Some(LogBody::Bytes(bytes)) = runner.log("t.1.0", 2).await else {
        panic!("no log");
    };
    assert_eq!(bytes, lines.as_bytes());
    let sent = server.received_requests().await.expect("recording");
    let logplex = sent
        .iter()
        .find(|r| r.url.path() == "/logplex/s-1")
        .expect("the log fetched");
    assert!(logplex.headers.get("authorization").is_none());
    // An attempt this runner did not start has no known dyno: no request.
    assert!(runner.log("t.1.0", 1).await.is_none());
    assert_eq!(runner.calls(), 2, "the create and the log session");
}

#[tokio::test]
async fn a_log_that_cannot_be_fetched_is_none() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DYNOS))
        .respond_with(created("d-1", "run.7"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/apps/demo/log-sessions"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({"id": "forbidden"})))
        .mount(&server)
        .await;
    let runner = HerokuRunner::new(config(&server));
    runner
        .start(spec("t.1.0", 1), CancellationToken::new(), ignore_exit())
        .await
        .expect("started");
    assert!(runner.log("t.1.0", 1).await.is_none());
}

#[tokio::test]
async fn alive_answers_for_dynos_of_other_engines_from_one_shared_list() {
    let server = MockServer::start().await;
    let (listed, _served) = mount_list(&server).await;
    listed
        .lock()
        .expect("lock")
        .extend([dyno("o-1", "run.1", "up"), dyno("o-2", "run.2", "crashed")]);
    // The list fetched for the first question answers them all (the interval is long).
    let runner = Arc::new(HerokuRunner::new(config(&server)));
    let asked = ["o-1", "o-2", "o-3"].map(|id| {
        let runner = Arc::clone(&runner);
        tokio::spawn(async move { runner.alive(id).await })
    });
    let mut answers = Vec::new();
    for a in asked {
        answers.push(a.await.expect("joined"));
    }
    assert_eq!(answers, [Some(true), Some(false), Some(false)]);
    // The first question's list, and at most one more for those asked while it was sent.
    let lists = requests(&server, "GET", DYNOS).await;
    assert!((1..=2).contains(&lists), "{lists} lists");
    assert_eq!(runner.lists(), lists as u64);
    // Asked again, and about one the fresh list shows: no new list.
    assert_eq!(runner.alive("o-3").await, Some(false));
    assert_eq!(runner.alive("o-1").await, Some(true));
    assert_eq!(requests(&server, "GET", DYNOS).await, lists);
    // A dyno first asked about after that list was sent and absent from it: one list more
    // (it may have been created since), and it is gone.
    assert_eq!(runner.alive("o-4").await, Some(false));
    assert_eq!(requests(&server, "GET", DYNOS).await, lists + 1);
    assert_eq!(runner.alive("../../account").await, None);
    assert_eq!(requests(&server, "GET", DYNOS).await, lists + 1);
}

#[tokio::test]
async fn alive_without_a_list_cannot_tell() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(DYNOS))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let runner = HerokuRunner::new(config(&server).max_retries(0));
    assert_eq!(runner.alive("o-1").await, None);
}

#[tokio::test]
async fn the_list_follows_next_range() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(DYNOS))
        .and(header("Range", "id ..; max=1000"))
        .respond_with(
            ResponseTemplate::new(206)
                .set_body_json(json!([dyno("o-1", "run.1", "up")]))
                .insert_header("Next-Range", "]o-1..; max=1000"),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(DYNOS))
        .and(header("Range", "]o-1..; max=1000"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([dyno("o-2", "run.2", "up")])))
        .mount(&server)
        .await;
    let runner = HerokuRunner::new(config(&server));
    assert_eq!(runner.alive("o-1").await, Some(true));
    assert_eq!(runner.alive("o-2").await, Some(true));
    assert_eq!(requests(&server, "GET", DYNOS).await, 2);
}
