//! The alerts of an alarm, as the UI's test button lists them, and the
//! test of an alert through every one of its alerters.

use hyper::{Response, StatusCode};

use crate::http::router::{busy, error, json};
use crate::http::{AppState, Body};

/// One alert in `GET /api/alarms/<name>/alerts`.
#[derive(serde::Serialize)]
struct AlertKinds<'a> {
    name: &'a str,
    /// The kinds of its alerters: what a test of it reaches.
    alerters: Vec<&'static str>,
}

/// GET /api/alarms/<name>/alerts: `{"alarm": name, "alerts": [{"name",
/// "alerters"}]}`, the alerts the alarm's configured section fires, in
/// its order. The UI offers a test of each; only kinds are shown, never
/// an address or a key.
pub(in crate::http) fn alarm_alerts(state: &AppState, name: &str) -> Response<Body> {
    let Some(names) = state.engine.alarm_alerts(name) else {
        return error(StatusCode::NOT_FOUND, format!("no alarm named '{name}'"));
    };
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        alarm: &'a str,
        alerts: Vec<AlertKinds<'a>>,
    }
    let alerts = names
        .iter()
        // Every name an alarm lists is configured (the file is refused
        // otherwise, and it is read once); one that were not would be
        // listed with no alerters, not hidden.
        .map(|n| AlertKinds {
            name: n,
            alerters: crate::sinks::alerts::alerter_kinds(&state.alerts, n).unwrap_or_default(),
        })
        .collect();
    json(
        StatusCode::OK,
        &Answer {
            alarm: name,
            alerts,
        },
    )
}

/// Alert tests sent at once by one server; more are a 503.
const TESTS_AT_ONCE: usize = 2;

/// What `POST /api/alerts/<name>/test` answers.
#[derive(serde::Serialize)]
struct AlertTestAnswer<'a> {
    alert: &'a str,
    /// True when every alerter delivered it.
    delivered: bool,
    results: Vec<crate::sinks::alerts::TestResult>,
}

/// POST /api/alerts/<name>/test: sends a marked test to every alerter of
/// the alert and says, per alerter, whether it was delivered. 404 for an
/// alert the configuration does not have.
pub(in crate::http) async fn test_alert(state: &AppState, name: &str) -> Response<Body> {
    // Each test makes a request to every alerter of the alert: however
    // many clients ask at once, two tests are under way at most.
    static UNDER_WAY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(TESTS_AT_ONCE);
    let Ok(permit) = UNDER_WAY.try_acquire() else {
        return busy(
            format!("{TESTS_AT_ONCE} alert tests are under way already: try again shortly"),
            "5",
        );
    };
    // Its own task, which holds the place: a client that hangs up cuts
    // the test short no more than it frees its place early.
    let test = crate::sinks::alerts::send_test(
        state.alerts.clone(),
        name.to_string(),
        state.alert_tasks.clone(),
    );
    let sent = state
        .alert_tasks
        .spawn(async move {
            let _permit = permit;
            test.await
        })
        .await;
    match sent {
        Err(e) => {
            tracing::error!("the test of alert {} failed: {e}", name.escape_debug());
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the test failed unexpectedly".into(),
            )
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no alert '{name}' is configured"),
        ),
        Ok(Some(results)) => json(
            StatusCode::OK,
            &AlertTestAnswer {
                alert: name,
                // An alert with no alerters delivered nothing.
                delivered: !results.is_empty() && results.iter().all(|r| r.delivered),
                results,
            },
        ),
    }
}
