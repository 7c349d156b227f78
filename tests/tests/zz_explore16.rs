use std::path::Path;
use hb_tests::{TestEnv, private_netns, stdout};
const CONFIG: &str = "[broker]\nsocket_mode = \"0666\"\n\n[[policy]]\nname = \"open\"\n";
#[test]
fn explore() {
    private_netns(&[]);
    let mut env = TestEnv::new_in(Path::new("/var/tmp"), "atk16-x", CONFIG);
    env.start_agent();
    let script = std::fs::read_to_string("/tmp/atk16/probe.sh").unwrap();
    for opts in [vec![], vec!["--user", "0"]] {
        let mut args = vec!["sandbox", "run", "--policy", "open"];
        args.extend_from_slice(&opts);
        args.extend_from_slice(&["--", "sh", "-c", &script]);
        let out = env.hb(&args);
        println!("=== {opts:?} exit {:?}\n{}\nSTDERR {}", out.status.code(), stdout(&out), String::from_utf8_lossy(&out.stderr));
    }
}
