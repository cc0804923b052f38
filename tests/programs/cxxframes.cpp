// C++ frames (tests/e2e/test_cxx.py): a crash in a virtual method reached through
// std::function, a catch block and std::sort's comparator; two threads waiting on a
// condition variable.
#include <algorithm>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

static std::mutex m;
static std::condition_variable cv;
static int ready = 0;
static bool go = false;
static volatile int *volatile np = nullptr;

struct Base {
    virtual int run(int x) = 0;
    virtual ~Base() {}
};
struct Derived : Base {
    std::map<std::string, int> tbl;
    __attribute__((noinline)) int run(int x) override {
        tbl["a"] = x;
        if (x > 3) *np = x;
        return x + 1;
    }
};
__attribute__((noinline)) int dispatch(Base *b, int x) { return b->run(x) * 2; }
__attribute__((noinline)) int thrower(int x) {
    if (x) throw std::runtime_error("x");
    return 1;
}
static void waiter() {
    std::unique_lock<std::mutex> l(m);
    ready++;
    cv.notify_all();
    cv.wait(l, [] { return go; });
}
int main(int argc, char **) {
    std::vector<std::thread> ts;
    for (int i = 0; i < 2; i++) ts.emplace_back(waiter);
    {
        std::unique_lock<std::mutex> l(m);
        cv.wait(l, [] { return ready == 2; });
    }
    Derived d;
    std::vector<int> v = {5, 3, 1, 4, 2};
    std::function<int(int)> f = [&](int x) {
        try {
            thrower(x);
        } catch (const std::exception &) {
            return dispatch(&d, x + argc);
        }
        return 0;
    };
    std::sort(v.begin(), v.end(), [&](int a, int b) { return f(a) < f(b); });
    for (auto &t : ts) t.join();
    return v[0];
}
