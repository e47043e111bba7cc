use servicekit::{service, ServiceContext};

#[service]
async fn two(a: ServiceContext, b: ServiceContext) {
    let _ = (a, b);
}

fn main() {}
