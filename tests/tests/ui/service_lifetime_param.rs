use servicekit::service;

#[service]
async fn svc<'a>(name: String) {
    let _: &'a str = "x";
    println!("{name}");
}

fn main() {}
