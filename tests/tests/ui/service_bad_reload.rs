use servicekit::{service, ServiceContext};

#[service(reload = "sometimes")]
async fn watcher(ctx: ServiceContext) {
    ctx.ready();
}

fn main() {}
