use servicekit::service;

#[service(restart = "always", name)]
async fn svc() {}

fn main() {}
