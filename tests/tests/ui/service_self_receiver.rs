use servicekit::service;

struct Server;

impl Server {
    #[service]
    async fn run(&self) {}
}

fn main() {}
