use servicekit::service;

#[service(crate = "not a path")]
async fn svc() {}

fn main() {}
