use servicekit::service;

#[service(max_restarts = -1)]
async fn svc() {}

fn main() {}
