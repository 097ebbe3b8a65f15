#include "process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <stdexcept>

extern char** environ;

namespace fedlora::sim {

namespace {

std::string errno_text(int e) { return std::strerror(e); }

void close_fd(int& fd) {
    if (fd >= 0)
        ::close(fd);
    fd = -1;
}

struct Pipe {
    int fd[2] = {-1, -1};
    explicit Pipe(bool want) {
        if (want && ::pipe2(fd, O_CLOEXEC) != 0)
            throw std::runtime_error("cannot create a pipe: " + errno_text(errno));
    }
    ~Pipe() {
        close_fd(fd[0]);
        close_fd(fd[1]);
    }
    int take(int end) {
        const int f = fd[end];
        fd[end] = -1;
        return f;
    }
};

}  // namespace

ChildProcess::ChildProcess(const Options& o) {
    if (o.argv.empty())
        throw std::invalid_argument("ChildProcess: empty argv");
    Pipe in(o.pipe_stdin), out(o.pipe_stdout), err(o.pipe_stderr);

    // The environment: ours, with o.env's entries set or replaced.
    std::map<std::string, std::string> env;
    std::vector<std::string> order;
    auto put = [&](const std::string& entry) {
        const auto eq = entry.find('=');
        const std::string name = entry.substr(0, eq);
        if (!env.count(name))
            order.push_back(name);
        env[name] = entry;
    };
    for (char** e = environ; e && *e; ++e)
        put(*e);
    for (const auto& e : o.env)
        put(e);
    std::vector<char*> envp;
    for (const auto& name : order)
        envp.push_back(env[name].data());
    envp.push_back(nullptr);
    std::vector<std::string> args = o.argv;
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    // dup2 onto 0/1/2 clears close-on-exec there; every other descriptor of ours is close-on-exec.
    if (o.pipe_stdin)
        posix_spawn_file_actions_adddup2(&fa, in.fd[0], STDIN_FILENO);
    if (o.pipe_stdout)
        posix_spawn_file_actions_adddup2(&fa, out.fd[1], STDOUT_FILENO);
    if (o.pipe_stderr)
        posix_spawn_file_actions_adddup2(&fa, err.fd[1], STDERR_FILENO);
    const int rc = ::posix_spawn(&pid_, o.program.c_str(), &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        pid_ = -1;
        throw std::runtime_error("cannot run " + o.program + ": " + errno_text(rc));
    }
    // The syscall itself: glibc 2.36's <sys/pidfd.h> lacks C linkage for C++.
    pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    if (pidfd_ < 0) {
        const int e = errno;
        ::kill(pid_, SIGKILL);
        reap(true);
        throw std::runtime_error("cannot watch the child process " + std::to_string(pid_) + ": pidfd_open: " +
                                 errno_text(e));
    }
    in_ = in.take(1);
    out_ = out.take(0);
    err_ = err.take(0);
    for (const int fd : {out_, err_})
        if (fd >= 0)
            ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

ChildProcess::~ChildProcess() {
    if (pid_ > 0 && !status_)
        terminate(std::chrono::seconds(2));
    close_fd(in_);
    close_fd(out_);
    close_fd(err_);
    close_fd(pidfd_);
}

void ChildProcess::close_stdin() { close_fd(in_); }

std::optional<int> ChildProcess::reap(bool block) {
    if (status_)
        return status_;
    int st = 0;
    pid_t r;
    do
        r = ::waitpid(pid_, &st, block ? 0 : WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == pid_)
        status_ = st;
    return status_;
}

std::optional<int> ChildProcess::poll_exit() { return reap(false); }

std::optional<int> ChildProcess::wait_for(std::chrono::milliseconds timeout) {
    if (status_)
        return status_;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        pollfd p{pidfd_, POLLIN, 0};
        const int n = ::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(0, left.count())));
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0)
            return reap(true);
        return reap(false);  // timed out (or poll failed): reaped only if it has exited meanwhile
    }
}

int ChildProcess::terminate(std::chrono::milliseconds grace) {
    if (status_)
        return *status_;
    ::kill(pid_, SIGTERM);
    if (const auto st = wait_for(grace))
        return *st;
    ::kill(pid_, SIGKILL);
    return *reap(true);
}

std::string ChildProcess::describe(int st) {
    if (WIFEXITED(st))
        return "exited with status " + std::to_string(WEXITSTATUS(st));
    if (WIFSIGNALED(st))
        return "was killed by signal " + std::to_string(WTERMSIG(st)) + " (" + strsignal(WTERMSIG(st)) + ")";
    return "ended (wait status " + std::to_string(st) + ")";
}

bool read_available(int fd, std::string& buffer) {
    char buf[4096];
    while (true) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n > 0) {
            buffer.append(buf, static_cast<std::size_t>(n));
            continue;
        }
        if (n == 0)
            return false;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK;
    }
}

std::string self_executable() {
    char buf[4096];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0)
        throw std::runtime_error("cannot find this program's executable (/proc/self/exe): " + errno_text(errno));
    return std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace fedlora::sim
