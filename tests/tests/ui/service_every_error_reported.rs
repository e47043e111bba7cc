// One attribute with three bad arguments reports all three, each at its tokens.
use servicekit::service;

#[service(restart = "sometimes", every = "0s", within = 5)]
async fn svc() {}

fn main() {}
