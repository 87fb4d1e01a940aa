//! Outbound HTTP through `wasi:http`, against a real server on loopback: the allow-list, rate
//! limits, the circuit breaker and the connection pool.

use crate::common;

use common::{Scenario, Upstream};

/// A probe agent that runs `script` with the given outbound targets.
fn caller(name: &str, outbound: &str, script: &str) -> String {
    format!(
        "[[agent]]\nname = \"{name}\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\nbudget = \"30s\"\n\
         grants = [\"messaging\", \"logging\"]\noutbound = [{outbound}]\nconfig = {{ script = \"{script}\" }}\n"
    )
}

#[test]
fn only_granted_targets_under_their_path_are_reachable() {
    let upstream = Upstream::start();
    let u = |path: &str| upstream.url(path);
    let targets = format!(
        "[outbound.api]\nurl = \"{}\"\n[outbound.other]\nurl = \"{}\"\n[outbound.echo]\nurl = \"{}\"\n",
        u("/api"),
        u("/ok"),
        u("/echo")
    );
    let script = format!(
        "http GET {}; http GET {}; http GET {}; http GET http://127.0.0.1:1/api/x; \
         target api; target other; target nope; http GET {}; http GET {}; http-post {} a posted body; stop",
        u("/api/v1"),
        u("/ok"),
        u("/apiary"),
        u("/api/../ok"),
        u("/api/%2e%2e/ok"),
        u("/echo")
    );
    let stranger = format!("http GET {}; stop", u("/api/v1"));
    let scenario = Scenario::finite(
        "",
        &format!("{targets}{}{}", caller("caller", "\"api\", \"echo\"", &script), caller("stranger", "", &stranger)),
    );
    let run = scenario.run();
    run.assert_success();
    assert_eq!(run.outcome("caller", &format!("http GET {}", u("/api/v1"))), "status 200 body /api/v1");
    assert_eq!(run.outcome("caller", &format!("http GET {}", u("/ok"))), "error HttpRequestDenied");
    assert_eq!(run.outcome("caller", &format!("http GET {}", u("/apiary"))), "error HttpRequestDenied");
    assert_eq!(run.outcome("caller", "http GET http://127.0.0.1:1/api/x"), "error HttpRequestDenied");
    for escape in ["/api/../ok", "/api/%2e%2e/ok"] {
        assert_eq!(run.outcome("caller", &format!("http GET {}", u(escape))), "error HttpRequestDenied", "{escape}");
    }
    assert_eq!(
        run.outcome("caller", &format!("http-post {} a posted body", u("/echo"))),
        "status 200 body echo a posted body"
    );
    assert_eq!(run.outcome("caller", "target api"), "circuit closed retry-after-ms - in-use 0 capacity 8");
    assert_eq!(run.outcome("caller", "target other"), "error denied");
    assert_eq!(run.outcome("caller", "target nope"), "error not-found");
    assert_eq!(run.outcome("stranger", &format!("http GET {}", u("/api/v1"))), "error HttpRequestDenied");
    assert_eq!(upstream.hits("/api/v1"), 1, "only the granted request reached the server");
    assert_eq!(upstream.hits("/ok") + upstream.hits("/apiary"), 0);
    assert!(!run.events("outbound_denied", Some("stranger")).is_empty());
}

/// `passed 12 limited 7 elapsed-ms 1500` → (limited, elapsed ms).
fn paced(outcome: &str) -> (u64, u64) {
    let words: Vec<&str> = outcome.split(' ').collect();
    assert_eq!(words[..2], ["passed", "12"], "{outcome}");
    (words[3].parse().unwrap(), words[5].parse().unwrap())
}

#[test]
fn rate_limits_hold_over_a_window_per_target_and_per_agent() {
    let upstream = Upstream::start();
    let targets = format!(
        "[outbound.quota]\nurl = \"{}\"\nrate = {{ limit = 10, per = \"1s\", burst = 2 }}\n\
         [outbound.each]\nurl = \"{}\"\nrate_per_agent = {{ limit = 3, per = \"1m\" }}\n",
        upstream.url("/ok"),
        upstream.url("/api")
    );
    let pace = format!("http-paced 12 GET {}", upstream.url("/ok"));
    let each = format!("http-count 6 GET {}; http GET {}; stop", upstream.url("/api/a"), upstream.url("/api/a"));
    let scenario = Scenario::finite(
        "",
        &format!(
            "{targets}{}{}{}",
            caller("pacer", "\"quota\"", &format!("{pace}; stop")),
            caller("first", "\"each\"", &each),
            caller("second", "\"each\"", &each)
        ),
    );
    let run = scenario.run();
    run.assert_success();

    // GCRA at 10/s with a burst of 2: the 12 requests that pass take at least 10 intervals of
    // 100 ms, however fast the client asks. A client that waits out each retry-after is never
    // early: after the burst, each limited answer is followed by a pass (so at most 10 are
    // limited), and the loop, asking at once after each pass, meets the limit.
    let (limited, elapsed) = paced(&run.outcome("pacer", &pace));
    assert!(elapsed >= 1000, "12 passed within {elapsed} ms: the limit of 10/s did not hold");
    assert!((1..=10).contains(&limited), "{limited} limited: a retry-after was too short");
    assert_eq!(upstream.hits("/ok"), 12, "a limited request never reaches the target");

    for agent in ["first", "second"] {
        let step = format!("http-count 6 GET {}", upstream.url("/api/a"));
        assert_eq!(run.outcome(agent, &step), "outcomes [200:3,rate-limited:3]", "{agent}");
        let rejected = run.outcome(agent, &format!("http GET {}", upstream.url("/api/a")));
        let retry: u64 =
            rejected.strip_prefix("status 429 rejected rate-limited retry-after-ms ").unwrap().parse().unwrap();
        // The next of 3 cells a minute is at most 20 s away.
        assert!(retry > 0 && retry <= 20_000, "{rejected}");
    }
    assert_eq!(upstream.hits("/api/a"), 6);
}

#[test]
fn the_breaker_opens_rejects_probes_once_in_half_open_and_closes() {
    let upstream = Upstream::start();
    let target = format!(
        "[outbound.flaky]\nurl = \"{}\"\n\
         breaker = {{ failures = 3, backoff_initial = \"1s\", backoff_max = \"1s\", probes = 1 }}\n",
        upstream.url("")
    );
    let u = |path: &str| upstream.url(path);
    let script = format!(
        "http-count 3 GET {fail}; target flaky; http-count 4 GET {ok}; http GET {ok}; \
         sleep 1100; http GET {fail}; target flaky; \
         sleep 1100; http-pair GET {slow}; target flaky; http GET {ok}; stop",
        fail = u("/fail"),
        ok = u("/ok"),
        slow = u("/slow")
    );
    let scenario = Scenario::finite("", &format!("{target}{}", caller("caller", "\"flaky\"", &script)));
    let run = scenario.run();
    run.assert_success();
    let logs = run.logs("caller");
    let outcomes: Vec<&str> = logs.iter().filter_map(|l| l.rsplit(" => ").next()).collect();
    assert_eq!(outcomes[0], "outcomes [500:3]");
    assert!(outcomes[1].starts_with("circuit open retry-after-ms "), "{outcomes:?}");
    assert_eq!(outcomes[2], "outcomes [circuit-open:4]", "an open breaker rejects without calling");
    // The open delay is jittered within [500 ms, 1 s]; what is left of it counts down.
    let left = |outcome: &str, prefix: &str| -> u64 {
        outcome
            .strip_prefix(prefix)
            .and_then(|rest| rest.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{outcome:?} does not start with {prefix:?}"))
    };
    let status_left = left(outcomes[1], "circuit open retry-after-ms ");
    let answer_left = left(outcomes[3], "status 503 rejected circuit-open retry-after-ms ");
    assert!(status_left <= 1000 && answer_left <= status_left && answer_left > 0, "{outcomes:?}");
    assert_eq!(outcomes[5], "status 500 body failing", "the half-open probe reached the target");
    assert!(outcomes[6].starts_with("circuit open"), "a failed probe reopens: {outcomes:?}");
    assert_eq!(outcomes[8], "outcomes [200,circuit-open]", "half-open admits one probe at a time");
    assert!(outcomes[9].starts_with("circuit closed"), "a successful probe closes: {outcomes:?}");
    assert_eq!(outcomes[10], "status 200 body hello");
    assert_eq!((upstream.hits("/fail"), upstream.hits("/ok"), upstream.hits("/slow")), (4, 1, 1));
}

#[test]
fn a_falling_success_rate_opens_the_breaker_and_a_healthy_one_keeps_it_closed() {
    let upstream = Upstream::start();
    let target = format!(
        "[outbound.flaky]\nurl = \"{}\"\n\
         breaker = {{ success_rate = 0.5, minimum_calls = 4, window = \"1s\", backoff_initial = \"60s\", backoff_max = \"60s\" }}\n",
        upstream.url("")
    );
    // Failsafe judges the rate once a whole window has passed, as a moving average weighted by
    // time: the successes run for longer than the window; the failures go on, 10 ms apart,
    // until the breaker answers in the target's place.
    let trip = format!("await-outcome 60000 http GET {} => status 503 rejected circuit-open*", upstream.url("/fail"));
    let script = format!(
        "await-outcome 1500 http GET {ok} => never; target flaky; {trip}; target flaky; stop",
        ok = upstream.url("/ok")
    );
    let scenario = Scenario::finite("", &format!("{target}{}", caller("caller", "\"flaky\"", &script)));
    let run = scenario.run();
    run.assert_success();
    let logs = run.logs("caller");
    let outcomes: Vec<&str> = logs.iter().filter_map(|l| l.rsplit(" => ").next()).collect();
    assert_eq!(outcomes[0], "status 200 body hello");
    assert!(outcomes[1].starts_with("circuit closed"), "successes for a whole window keep it closed: {outcomes:?}");
    assert!(outcomes[2].starts_with("status 503 rejected circuit-open retry-after-ms "), "{outcomes:?}");
    assert!(outcomes[3].starts_with("circuit open"), "{outcomes:?}");
    assert!(upstream.hits("/ok") >= 4 && upstream.hits("/fail") >= 4, "the minimum of calls was seen");
}

#[test]
fn pool_checkout_times_out_under_contention_overflow_absorbs_it_and_slow_answers_time_out() {
    let upstream = Upstream::start();
    let targets = format!(
        "[outbound.single]\nurl = \"{u}\"\npool = {{ size = 1, overflow = 0, checkout_timeout = \"200ms\" }}\n\
         [outbound.spill]\nurl = \"{u}\"\npool = {{ size = 1, overflow = 1, checkout_timeout = \"200ms\" }}\n\
         [outbound.impatient]\nurl = \"{u}\"\nresponse_timeout = \"200ms\"\n",
        u = upstream.url("")
    );
    let slow = upstream.url("/slow");
    let script = format!("http-pair GET {slow}; target single; stop");
    let spill = format!("http-pair GET {slow}; stop");
    let scenario = Scenario::finite(
        "",
        &format!(
            "{targets}{}{}{}",
            caller("single", "\"single\"", &script),
            caller("spill", "\"spill\"", &spill),
            caller(
                "impatient",
                "\"impatient\"",
                &format!("http GET {slow}; http GET {ok}; stop", ok = upstream.url("/ok"))
            )
        ),
    );
    let run = scenario.run();
    run.assert_success();
    assert_eq!(run.outcome("single", &format!("http-pair GET {slow}")), "outcomes [200,ConnectionLimitReached]");
    assert_eq!(run.outcome("single", "target single"), "circuit closed retry-after-ms - in-use 0 capacity 1");
    assert_eq!(run.outcome("spill", &format!("http-pair GET {slow}")), "outcomes [200,200]");
    assert_eq!(run.outcome("impatient", &format!("http GET {slow}")), "error ConnectionReadTimeout");
    assert_eq!(run.outcome("impatient", &format!("http GET {}", upstream.url("/ok"))), "status 200 body hello");
    assert_eq!(upstream.hits("/slow"), 4);
}

#[test]
fn an_overflow_connection_is_closed_on_return_and_the_kept_one_is_reused() {
    let upstream = Upstream::start();
    let target = format!(
        "[outbound.spill]\nurl = \"{}\"\npool = {{ size = 1, overflow = 1, checkout_timeout = \"5s\" }}\n",
        upstream.url("")
    );
    let (slow, ok) = (upstream.url("/slow"), upstream.url("/ok"));
    let script = format!("http-pair GET {slow}; http GET {ok}; http GET {ok}; http GET {ok}; log done");
    let scenario = Scenario::agents("", &format!("{target}{}", caller("spiller", "\"spill\"", &script)));
    let mut child = scenario.spawn();
    let mut lines = common::lines_of(&mut child);
    let mut seen = Vec::new();
    common::wait_for_event(&mut lines, &mut seen, |e| {
        e["agent"] == "spiller" && e["message"] == "probe: log done => done"
    });
    // The pair needed two connections; the overflow one is closed once returned, and the three
    // requests after it all went over the one the pool keeps.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while upstream.connections().1 > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(upstream.connections(), (2, 1), "(accepted, open)");
    assert_eq!(upstream.hits("/ok"), 3);
    common::terminate(&child);
    let _ = child.wait();
    let outcomes: Vec<String> = seen
        .iter()
        .filter(|e| e["agent"] == "spiller")
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect();
    assert!(outcomes.contains(&format!("probe: http-pair GET {slow} => outcomes [200,200]")), "{outcomes:#?}");
}

#[test]
fn a_target_that_accepts_but_never_completes_the_handshake_fails_at_the_connect_timeout() {
    // TCP is accepted, then nothing is said: the TLS handshake waits for an answer that never
    // comes, and `connect_timeout` covers it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || silent.incoming().take(1).filter_map(Result::ok).collect::<Vec<_>>());
    let target = format!("[outbound.mute]\nurl = \"https://127.0.0.1:{port}\"\nconnect_timeout = \"300ms\"\n");
    let script = format!("http GET https://127.0.0.1:{port}/; stop");
    let scenario = Scenario::finite("", &format!("{target}{}", caller("caller", "\"mute\"", &script)));
    let run = scenario.run();
    run.assert_success();
    assert_eq!(run.outcome("caller", &format!("http GET https://127.0.0.1:{port}/")), "error ConnectionTimeout");
    assert_eq!(held.join().unwrap().len(), 1, "the connection was made");
}

#[test]
fn ipv6_literal_targets_work_and_credentials_in_urls_are_refused() {
    let v6 = Upstream::start_on("[::1]:0");
    let v4 = Upstream::start();
    let port = v4.address.port();
    let targets =
        format!("[outbound.six]\nurl = \"{}\"\n[outbound.four]\nurl = \"{}\"\n", v6.url("/api"), v4.url("/api"));
    // `user@` would reach the upstream's Host header as written: refused before any connection.
    let script = format!("http GET {}; http GET http://user@127.0.0.1:{port}/api/v1; stop", v6.url("/api/v1"));
    let scenario = Scenario::finite("", &format!("{targets}{}", caller("caller", "\"six\", \"four\"", &script)));
    let run = scenario.run();
    run.assert_success();
    assert_eq!(run.outcome("caller", &format!("http GET {}", v6.url("/api/v1"))), "status 200 body /api/v1");
    assert_eq!(
        run.outcome("caller", &format!("http GET http://user@127.0.0.1:{port}/api/v1")),
        "error HttpRequestDenied"
    );
    assert_eq!(v4.hits("/api/v1"), 0);
    // In the manifest, the same is refused where it is written.
    let with_credentials = Scenario::finite(
        "",
        &format!(
            "[outbound.four]\nurl = \"http://user:secret@127.0.0.1:{port}/api\"\n{}",
            caller("caller", "\"four\"", "stop")
        ),
    );
    let check = common::run_agora(&["check", with_credentials.manifest.to_str().unwrap()]);
    check.assert_failure();
    assert!(check.stderr.contains("credentials in a URL (user@host) are not accepted"), "{}", check.stderr);
}

/// A test CA and a server certificate it signs for `127.0.0.1` and `localhost`: (CA PEM,
/// server chain PEM, server key PEM).
fn test_pki(ca_name: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    server.distinguished_name.push(DnType::CommonName, "upstream");
    let server = server.signed_by(&server_key, &ca).unwrap();
    (ca.pem(), format!("{}{}", server.pem(), ca.pem()), server_key.serialize_pem())
}

#[test]
fn https_targets_verify_the_server_against_their_ca_bundle_or_the_system_store() {
    let (ca, chain, key) = test_pki("Agora test CA");
    let (stranger_ca, _, _) = test_pki("Some other CA");
    let upstream = Upstream::start_tls(&chain, &key);
    let localhost = upstream.url("/api").replace("127.0.0.1", "localhost");
    let targets = format!(
        "[outbound.trusted]\nurl = \"{}\"\nca_bundle = \"ca.pem\"\n\
         [outbound.by_name]\nurl = \"{localhost}\"\nca_bundle = \"ca.pem\"\n\
         [outbound.foreign]\nurl = \"{}\"\nca_bundle = \"stranger.pem\"\n\
         [outbound.system]\nurl = \"{}\"\n",
        upstream.url("/api"),
        upstream.url("/echo"),
        upstream.url("/ok"),
    );
    let plain = upstream.url("/api/plain").replace("https://", "http://");
    let script = format!(
        "http GET {}; http GET {localhost}/by-name; http-post {} sealed; http GET {}; http GET {plain}; stop",
        upstream.url("/api/v1"),
        upstream.url("/echo"),
        upstream.url("/ok"),
    );
    let scenario = Scenario::finite(
        "",
        &format!("{targets}{}", caller("caller", "\"trusted\", \"by_name\", \"foreign\", \"system\"", &script)),
    );
    std::fs::write(scenario.dir.path().join("ca.pem"), &ca).unwrap();
    std::fs::write(scenario.dir.path().join("stranger.pem"), &stranger_ca).unwrap();
    // The system store, for this run: a CA that did not sign the server's certificate.
    let system = scenario.dir.path().join("system.pem");
    std::fs::write(&system, &stranger_ca).unwrap();
    let mut command = common::agora();
    command.env("SSL_CERT_FILE", &system).env_remove("SSL_CERT_DIR");
    let run = common::run_command(command, &["run", "--log-format", "json", scenario.manifest.to_str().unwrap()]);
    run.assert_success();
    let outcome = |step: String| run.outcome("caller", &step);
    assert_eq!(outcome(format!("http GET {}", upstream.url("/api/v1"))), "status 200 body /api/v1");
    assert_eq!(outcome(format!("http GET {localhost}/by-name")), "status 200 body /api/by-name");
    assert_eq!(outcome(format!("http-post {} sealed", upstream.url("/echo"))), "error TlsCertificateError");
    assert_eq!(outcome(format!("http GET {}", upstream.url("/ok"))), "error TlsCertificateError");
    assert_eq!(outcome(format!("http GET {plain}")), "error HttpRequestDenied", "http does not reach an https target");
    assert_eq!(upstream.hits("/api/v1") + upstream.hits("/api/by-name"), 2);
    assert_eq!(
        upstream.hits("/echo") + upstream.hits("/ok") + upstream.hits("/api/plain"),
        0,
        "refused before any request"
    );

    // With the system store trusting the test CA, the target without a bundle gets through.
    std::fs::write(&system, &ca).unwrap();
    let mut command = common::agora();
    command.env("SSL_CERT_FILE", &system).env_remove("SSL_CERT_DIR");
    let run = common::run_command(command, &["run", "--log-format", "json", scenario.manifest.to_str().unwrap()]);
    run.assert_success();
    assert_eq!(run.outcome("caller", &format!("http GET {}", upstream.url("/ok"))), "status 200 body hello");
}

#[test]
fn a_ca_bundle_that_is_missing_or_not_certificates_is_refused_by_check() {
    let upstream = Upstream::start();
    let https = upstream.url("/api").replace("http://", "https://");
    let check = |bundle: &str, contents: Option<&str>| {
        let scenario = Scenario::finite(
            "",
            &format!(
                "[outbound.api]\nurl = \"{https}\"\nca_bundle = \"{bundle}\"\n{}",
                caller("caller", "\"api\"", "stop")
            ),
        );
        if let Some(contents) = contents {
            std::fs::write(scenario.dir.path().join(bundle), contents).unwrap();
        }
        let run = common::run_agora(&["check", scenario.manifest.to_str().unwrap()]);
        run.assert_failure();
        run.stderr
    };
    let missing = check("absent.pem", None);
    assert!(missing.contains("outbound.api") && missing.contains("absent.pem"), "{missing}");
    let empty = check("empty.pem", Some("not a certificate\n"));
    assert!(empty.contains("holds no certificate"), "{empty}");
    let garbage = check("bad.pem", Some("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"));
    assert!(garbage.contains("bad.pem") && garbage.contains("ca_bundle"), "{garbage}");
}
