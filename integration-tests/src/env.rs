//! Where the tests' AWS endpoints come from.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::SdkConfig;
use aws_config::timeout::TimeoutConfig;

/// The endpoints the tests will use, as read from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoints {
    /// Local (or LocalStack) endpoints from `AWS_ENDPOINT_URL*`.
    Local {
        /// Where Kinesis calls go.
        kinesis: String,
        /// Where DynamoDB calls go.
        dynamodb: String,
    },
    /// Real AWS, allowed only by `KINESIS_IT_REAL_AWS=1`.
    RealAws,
}

/// No endpoint configured: tests must not run against whatever the default chain finds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "no AWS endpoint configured for the integration tests: {missing}. Start the local emulators \
     with `eval \"$(scripts/local-aws.sh up)\"` (or set AWS_ENDPOINT_URL=http://localhost:4566 for \
     LocalStack); to run against real AWS set KINESIS_IT_REAL_AWS=1"
)]
pub struct MissingEndpoint {
    missing: String,
}

impl Endpoints {
    /// Reads the endpoints through `var` (the process environment in [`TestEnv::new`]).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Endpoints, MissingEndpoint> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let shared = get("AWS_ENDPOINT_URL");
        let kinesis = get("AWS_ENDPOINT_URL_KINESIS").or_else(|| shared.clone());
        let dynamodb = get("AWS_ENDPOINT_URL_DYNAMODB").or(shared);
        match (kinesis, dynamodb) {
            (Some(kinesis), Some(dynamodb)) => Ok(Endpoints::Local { kinesis, dynamodb }),
            _ if get("KINESIS_IT_REAL_AWS").as_deref() == Some("1") => Ok(Endpoints::RealAws),
            (k, _) => Err(MissingEndpoint {
                missing: if k.is_none() {
                    "neither AWS_ENDPOINT_URL_KINESIS nor AWS_ENDPOINT_URL is set".into()
                } else {
                    "neither AWS_ENDPOINT_URL_DYNAMODB nor AWS_ENDPOINT_URL is set".into()
                },
            }),
        }
    }
}

/// SDK clients for one test, configured from the environment.
#[derive(Clone, Debug)]
pub struct TestEnv {
    /// The shared SDK configuration (what the producer and consumer are built from).
    pub sdk_config: SdkConfig,
    /// A Kinesis client.
    pub kinesis: aws_sdk_kinesis::Client,
    /// A DynamoDB client.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// Which endpoints are in use.
    pub endpoints: Endpoints,
}

impl TestEnv {
    /// Builds the clients, or panics with a message saying how to configure an endpoint.
    pub async fn new() -> TestEnv {
        let endpoints = match Endpoints::from_vars(|name| std::env::var(name).ok()) {
            Ok(endpoints) => endpoints,
            Err(missing) => panic!("{missing}"),
        };
        // The SDK itself reads AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_KINESIS and
        // AWS_ENDPOINT_URL_DYNAMODB; bounded timeouts keep a dead endpoint from hanging a test.
        let sdk_config = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .build(),
            )
            .load()
            .await;
        TestEnv {
            kinesis: aws_sdk_kinesis::Client::new(&sdk_config),
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk_config),
            sdk_config,
            endpoints,
        }
    }
}

impl TestEnv {
    /// The Kinesis endpoint URL, for tests that put a proxy in front of it. Panics against real
    /// AWS, where no plain-HTTP endpoint exists to proxy.
    pub fn kinesis_endpoint(&self) -> &str {
        match &self.endpoints {
            Endpoints::Local { kinesis, .. } => kinesis,
            Endpoints::RealAws => {
                panic!("this test needs a local Kinesis endpoint to put a fault proxy in front of")
            }
        }
    }

    /// A fault-injecting proxy in front of the DynamoDB endpoint (local endpoints only).
    pub async fn dynamodb_fault_proxy(
        &self,
        faults: crate::fault_proxy::Faults,
    ) -> crate::fault_proxy::FaultProxy {
        match &self.endpoints {
            Endpoints::Local { dynamodb, .. } => {
                crate::fault_proxy::FaultProxy::start(dynamodb, faults).await
            }
            Endpoints::RealAws => {
                panic!("this test needs a local DynamoDB endpoint to put a fault proxy in front of")
            }
        }
    }

    /// A DynamoDB client that sends its calls to `url` (a proxy) instead.
    pub fn dynamodb_client_at(&self, url: &str) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::config::Builder::from(&self.sdk_config)
            .endpoint_url(url)
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    /// A fault-injecting proxy in front of the Kinesis endpoint.
    pub async fn fault_proxy(
        &self,
        faults: crate::fault_proxy::Faults,
    ) -> crate::fault_proxy::FaultProxy {
        crate::fault_proxy::FaultProxy::start(self.kinesis_endpoint(), faults).await
    }

    /// A Kinesis client that sends its calls to `url` (a proxy) instead.
    pub fn kinesis_client_at(&self, url: &str) -> aws_sdk_kinesis::Client {
        let config = aws_sdk_kinesis::config::Builder::from(&self.sdk_config)
            .endpoint_url(url)
            .build();
        aws_sdk_kinesis::Client::from_conf(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn nothing_set_is_an_error_that_says_how_to_fix_it() {
        let err = Endpoints::from_vars(vars(&[])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("scripts/local-aws.sh up"), "{text}");
        assert!(text.contains("AWS_ENDPOINT_URL_KINESIS"), "{text}");
    }

    #[test]
    fn one_service_missing_names_that_service() {
        let err =
            Endpoints::from_vars(vars(&[("AWS_ENDPOINT_URL_KINESIS", "http://k")])).unwrap_err();
        assert!(
            err.to_string().contains("AWS_ENDPOINT_URL_DYNAMODB"),
            "{err}"
        );
    }

    #[test]
    fn shared_endpoint_serves_both_and_specific_ones_win() {
        assert_eq!(
            Endpoints::from_vars(vars(&[("AWS_ENDPOINT_URL", "http://ls:4566")])),
            Ok(Endpoints::Local {
                kinesis: "http://ls:4566".into(),
                dynamodb: "http://ls:4566".into()
            })
        );
        assert_eq!(
            Endpoints::from_vars(vars(&[
                ("AWS_ENDPOINT_URL", "http://ls:4566"),
                ("AWS_ENDPOINT_URL_KINESIS", "http://k:1"),
            ])),
            Ok(Endpoints::Local {
                kinesis: "http://k:1".into(),
                dynamodb: "http://ls:4566".into()
            })
        );
    }

    #[test]
    fn real_aws_only_when_asked() {
        assert_eq!(
            Endpoints::from_vars(vars(&[("KINESIS_IT_REAL_AWS", "1")])),
            Ok(Endpoints::RealAws)
        );
        assert!(Endpoints::from_vars(vars(&[("KINESIS_IT_REAL_AWS", "yes")])).is_err());
        assert!(Endpoints::from_vars(vars(&[("AWS_ENDPOINT_URL", "  ")])).is_err());
    }
}
