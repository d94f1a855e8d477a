//! `linedee cloud check`'s Heroku items: the app exists, its release has the process types
//! the workflows name (the replica's Procfile), and its config vars point at the bucket and
//! hold credentials (whose values are never shown).

use super::check::CheckItem;
use crate::heroku::{Api, HerokuConfig, Secret};

/// The Heroku app a deployment runs tasks on, or rotates credentials into.
///
/// ```
/// let app = linedee_engine::serve::HerokuApp::new("my-app", "hrku-s3cr3t");
/// assert!(!format!("{app:?}").contains("s3cr3t"));
/// ```
#[derive(Debug, Clone)]
pub struct HerokuApp {
    app: String,
    token: Secret,
    api_url: String,
}

impl HerokuApp {
    /// `app`, read with `api_token` (never shown).
    pub fn new(app: impl Into<String>, api_token: impl Into<String>) -> Self {
        HerokuApp {
            app: app.into(),
            token: Secret::new(api_token),
            api_url: crate::heroku::DEFAULT_API_URL.to_owned(),
        }
    }

    /// The Platform API's URL (default `https://api.heroku.com`).
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = url.into();
        self
    }
}

/// Checks `app`: that it exists, that its formation has every one of `process_types`, and
/// that its config vars name `bucket` and hold credentials.
pub async fn check_heroku(
    app: &HerokuApp,
    bucket: &str,
    process_types: &[String],
) -> Vec<CheckItem> {
    let api = Api::new(
        &HerokuConfig::new(app.app.clone(), app.token.clone())
            .api_url(app.api_url.clone())
            .max_retries(2),
    );
    let name = &app.app;
    let mut items = Vec::new();
    match api.app_exists().await {
        Ok(true) => items.push(CheckItem::ok("heroku app", format!("`{name}` exists"))),
        Ok(false) => {
            items.push(CheckItem::wrong(
                "heroku app",
                format!("`{name}` does not exist, or the token cannot see it"),
                format!("heroku apps:create {name}   (or fix LD_HEROKU_APP, or use a token of the app's team)"),
            ));
            return items;
        }
        Err(e) => {
            items.push(CheckItem::wrong(
                "heroku app",
                format!("`{name}` cannot be read: {}", crate::heroku::report(&e)),
                "check HEROKU_API_KEY (`heroku authorizations:create`) and LD_HEROKU_API_URL",
            ));
            return items;
        }
    }
    items.push(match api.process_types().await {
        Ok(types) => {
            let missing: Vec<&str> = process_types
                .iter()
                .filter(|t| !types.contains(t))
                .map(String::as_str)
                .collect();
            if missing.is_empty() {
                CheckItem::ok(
                    "process types",
                    format!("the release has {}", list(&types)),
                )
            } else {
                CheckItem::wrong(
                    "process types",
                    format!(
                        "the release lacks {} (it has {})",
                        list(&missing),
                        list(&types)
                    ),
                    "add them to the app's Procfile (`linedee procfile` prints one from the task registry) and deploy it (git push heroku main)",
                )
            }
        }
        Err(e) => CheckItem::wrong(
            "process types",
            format!("the formation cannot be read: {}", crate::heroku::report(&e)),
            "the token needs read access to the app",
        ),
    });
    items.push(match api.config_vars().await {
        Ok(Some(vars)) => config_vars(&vars, bucket, name),
        Ok(None) => CheckItem::wrong("config vars", "the app is gone", "see `heroku app`"),
        Err(e) => CheckItem::wrong(
            "config vars",
            format!("cannot be read: {}", crate::heroku::report(&e)),
            "the token needs the app's config vars (a token of its owner or a collaborator with deploy access)",
        ),
    });
    items
}

/// The config vars item: the bucket named, the region and credentials present. No value but
/// the bucket's and the region's is shown.
fn config_vars(
    vars: &std::collections::BTreeMap<String, String>,
    bucket: &str,
    app: &str,
) -> CheckItem {
    const NAME: &str = "config vars";
    let mut wrong = Vec::new();
    match vars.get("LD_S3_BUCKET").map(String::as_str) {
        Some(b) if b == bucket => {}
        Some(b) => wrong.push(format!("LD_S3_BUCKET is `{b}`, not `{bucket}`")),
        None => wrong.push("LD_S3_BUCKET is not set".to_owned()),
    }
    let missing: Vec<&str> = [
        "LD_REGION",
        linedee::credentials::ACCESS_KEY_VAR,
        linedee::credentials::SECRET_KEY_VAR,
    ]
    .into_iter()
    .filter(|k| vars.get(*k).is_none_or(String::is_empty))
    .collect();
    if !missing.is_empty() {
        wrong.push(format!("{} not set", list(&missing)));
    }
    if wrong.is_empty() {
        let temporary = vars.contains_key(linedee::credentials::SESSION_TOKEN_VAR);
        CheckItem::ok(
            NAME,
            format!(
                "LD_S3_BUCKET={bucket}, LD_REGION={}, {} credentials",
                vars["LD_REGION"],
                if temporary {
                    "temporary (rotated)"
                } else {
                    "long-lived"
                }
            ),
        )
    } else {
        CheckItem::wrong(
            NAME,
            wrong.join("; "),
            format!(
                "linedee cloud rotate --force --heroku-app {app} --rotate-role-arn ROLE   (or heroku config:set LD_S3_BUCKET={bucket} LD_REGION=… LD_AWS_ACCESS_KEY_ID=… LD_AWS_SECRET_ACCESS_KEY=… -a {app})"
            ),
        )
    }
}

/// `a, b and c`, each in backticks.
fn list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("`{}`", s.as_ref())).collect();
    match quoted.as_slice() {
        [] => "none".to_owned(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn config_vars_name_what_is_missing_and_show_no_secret() {
        let item = config_vars(
            &vars(&[
                ("LD_S3_BUCKET", "other"),
                ("LD_AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ]),
            "b1",
            "app",
        );
        assert!(!item.ok);
        assert!(
            item.detail.contains("LD_S3_BUCKET is `other`, not `b1`"),
            "{}",
            item.detail
        );
        assert!(
            item.detail
                .contains("`LD_REGION` and `LD_AWS_ACCESS_KEY_ID` not set"),
            "{}",
            item.detail
        );
        assert!(!format!("{item:?}").contains("s3cr3t"));
        let item = config_vars(
            &vars(&[
                ("LD_S3_BUCKET", "b1"),
                ("LD_REGION", "eu-west-1"),
                ("LD_AWS_ACCESS_KEY_ID", "ASIA1"),
                ("LD_AWS_SECRET_ACCESS_KEY", "s3cr3t"),
                ("LD_AWS_SESSION_TOKEN", "t0k3n"),
            ]),
            "b1",
            "app",
        );
        assert!(item.ok, "{item:?}");
        assert!(item.detail.contains("temporary"));
        assert!(!format!("{item:?}").contains("s3cr3t") && !format!("{item:?}").contains("t0k3n"));
    }

    #[test]
    fn lists_read_as_prose() {
        assert_eq!(list::<&str>(&[]), "none");
        assert_eq!(list(&["a"]), "`a`");
        assert_eq!(list(&["a", "b", "c"]), "`a`, `b` and `c`");
    }
}
