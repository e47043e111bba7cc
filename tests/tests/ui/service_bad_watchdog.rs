use servicekit::{service, ServiceContext};

// Nothing to beat with.
#[service(watchdog = "30s")]
async fn no_context() {}

// A periodic service beats once a tick: the watchdog must outlast the period.
#[service(every = "1m", watchdog = "30s")]
async fn too_short(ctx: ServiceContext) {
    ctx.ready();
}

#[service(watchdog = "0s")]
async fn zero(ctx: ServiceContext) {
    ctx.heartbeat();
}

fn main() {}
