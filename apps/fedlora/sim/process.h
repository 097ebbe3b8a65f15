// Child processes of the experiment (the radio process of the flowgraph transport, the client processes of
// `fedlora sim --transport flowgraph`): started with posix_spawn, their standard streams optionally piped to this
// process, ended in the destructor (SIGTERM, then SIGKILL after a grace period) and always reaped, so that no child
// outlives the object. Waits use a pidfd (no polling loops, no sleeps). Linux only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace fedlora::sim {

class ChildProcess {
public:
    struct Options {
        std::string program;            // the file executed (e.g. /usr/bin/python3, /proc/self/exe)
        std::vector<std::string> argv;  // argv[0] first
        std::vector<std::string> env;   // NAME=VALUE entries set (or replaced) in the child's environment
        bool pipe_stdin = false;        // the child's stdin is a pipe this process writes (or closes)
        bool pipe_stdout = false;       // the child's stdout / stderr are pipes this process reads
        bool pipe_stderr = false;
    };

    // Throws std::runtime_error naming the program and the reason (e.g. no such file).
    explicit ChildProcess(const Options& options);
    ~ChildProcess();  // terminate(2 s) if still running
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;

    pid_t pid() const { return pid_; }
    // This process's ends of the pipes (-1 when not piped or closed). The read ends are non-blocking.
    int stdin_fd() const { return in_; }
    int stdout_fd() const { return out_; }
    int stderr_fd() const { return err_; }
    // Readable (for poll) once the child has exited.
    int exit_fd() const { return pidfd_; }
    void close_stdin();

    // Waits until the child exits, at most `timeout`; returns its wait status, or nullopt if it still runs.
    std::optional<int> wait_for(std::chrono::milliseconds timeout);
    // Its wait status if it has exited (reaping it), nullopt if it still runs. Never blocks.
    std::optional<int> poll_exit();
    // SIGTERM, up to `grace` for it to exit, then SIGKILL; reaps it. Returns the wait status.
    int terminate(std::chrono::milliseconds grace);
    bool exited() const { return status_.has_value(); }
    std::optional<int> status() const { return status_; }

    // "exited with status 1", "was killed by signal 9 (Killed)".
    static std::string describe(int wait_status);

private:
    std::optional<int> reap(bool block);
    pid_t pid_ = -1;
    int pidfd_ = -1;
    int in_ = -1, out_ = -1, err_ = -1;
    std::optional<int> status_;
};

// Reads what is available on a non-blocking fd into `buffer`; returns false at end of file (or error).
bool read_available(int fd, std::string& buffer);

// The path of this process's executable (readlink of /proc/self/exe).
std::string self_executable();

}  // namespace fedlora::sim
