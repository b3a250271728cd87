//! `probe-detector correlate`: checks the settings, builds the pipeline a correlator
//! writes through (alerts naming their sensors; with `--block`, blocks judged and
//! published, never applied here), and runs [`crate::fleet::correlate`].

use crate::{
    cli::{
        exit::UsageError,
        settings::{Settings, describe_trw},
    },
    detect::Engine,
    fleet::{
        correlate::{self, CorrelateConfig},
        keys,
        sources::FleetSources,
    },
    output::{Blocking, Clock, Pipeline},
    policy::{
        budget::Budget,
        protect::{BlockPolicy, Spared},
    },
};

/// Runs the correlator until SIGINT or SIGTERM.
pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let Some(fleet) = &settings.fleet else {
        return Err(UsageError(
            "correlate needs --fleet URL: the Redis the sensors publish to".to_owned(),
        )
        .into());
    };
    let target = fleet.target()?;
    keys::check_name(&settings.sensor_name).map_err(|err| UsageError(err.to_string()))?;
    let allow_lists = settings.allow.load()?;
    let outputs = settings.open_outputs()?;
    log::info!("probe-detector {}", crate::VERSION);
    // The fleet's blocks are judged here on what a correlator knows (the allow-listed
    // sources, the sensors behind each source, the budget); each sensor judges them again
    // under its own never-block rules before applying one.
    let blocking = match settings.block {
        None => Blocking::Off,
        Some(block) => {
            log::info!(
                "fleet blocks: published for {} s when at least {} sensors saw the source, at most {} new a second",
                block.ttl.as_secs(),
                fleet.min_sensors,
                block.rate
            );
            Blocking::Recorded(
                BlockPolicy {
                    ttl: block.ttl,
                    block_spoofed: block.block_spoofed,
                    never: allow_lists
                        .sources
                        .iter()
                        .map(|c| (*c, Spared::AllowListed))
                        .collect(),
                },
                Budget::new(block.budget()),
            )
        }
    };
    // The fleet's hosts are many: the sequential test counts hosts. The first stage (by
    // source) runs every detector but the distributed one, which runs in the second (by
    // target), where it sees every source of a target.
    let config = settings.engine_config(&settings.home_nets);
    let targets = Engine::crowd_only(config.clone());
    let engine = Engine::new(crate::detect::EngineConfig {
        crowd: None,
        ..config
    });
    log::info!(
        "sequential hypothesis test: {}",
        describe_trw(settings.trw_unit())
    );
    let mut config = settings.pipeline_config(Clock::Unix);
    config.fixed_iface = Some("fleet".to_owned());
    let max_tracked = engine.config().max_tracked;
    let mut pipeline = Pipeline::new(engine, config, None, blocking, outputs);
    pipeline.set_fleet(FleetSources::new(
        settings.sensor_name.clone(),
        max_tracked,
        fleet.min_sensors,
    ));
    correlate::run(
        pipeline,
        targets,
        CorrelateConfig {
            target,
            name: settings.sensor_name.clone(),
            rebuild_window: fleet.window,
            block_ttl: settings.block.map(|b| b.ttl),
        },
    )
    .await
}
