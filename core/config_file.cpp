#include "core/config_file.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cstdio>
#include <string_view>

#include "core/options.h"

namespace wsgate::core {

namespace {

// Concatenation without `"literal" + std::string`, which GCC 12 flags with a
// false -Wrestrict.
std::string cat(std::initializer_list<std::string_view> parts) {
    std::string out;
    for (std::string_view p : parts) {
        out.append(p);
    }
    return out;
}

std::string type_name(const toml::node& n) {
    switch (n.type()) {
        case toml::node_type::string: return "a string";
        case toml::node_type::integer: return "an integer";
        case toml::node_type::floating_point: return "a float";
        case toml::node_type::boolean: return "a boolean";
        case toml::node_type::array: return "an array";
        case toml::node_type::table: return "a table";
        default: return "a date/time";
    }
}

// Edit distance, for "did you mean" on a misspelt key.
size_t distance(std::string_view a, std::string_view b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) {
        row[j] = j;
    }
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

std::string suggestion(std::string_view key) {
    const option_spec* best = nullptr;
    size_t best_d = 4;  // only close matches
    for (const option_spec& o : options()) {
        size_t d = distance(key, o.key);
        // A key under the wrong section: same name, different section.
        auto dot = o.key.rfind('.');
        std::string_view name = dot == std::string_view::npos ? o.key : o.key.substr(dot + 1);
        if (key == name ||
            (key.size() > name.size() && key.ends_with(name) && key[key.size() - name.size() - 1] == '.')) {
            d = 1;
        }
        if (d < best_d) {
            best_d = d;
            best = &o;
        }
    }
    return best ? cat({" (did you mean '", best->key, "'?)"}) : "";
}

bool is_section(std::string_view name) {
    for (const option_spec& o : options()) {
        if (o.key.size() > name.size() && o.key.starts_with(name) && o.key[name.size()] == '.') {
            return true;
        }
    }
    return false;
}

class loader {
public:
    loader(const std::string& path, config& cfg, config_file_result& out) : _path(path), _cfg(cfg), _out(out) {}

    void table(const toml::table& t, const std::string& prefix) {
        for (const auto& [k, node] : t) {
            std::string key = prefix + std::string(k.str());
            int line = static_cast<int>(node.source().begin.line);
            if (const option_spec* opt = find_option_by_key(key)) {
                _out.lines[key] = line;
                value(*opt, node, line);
            } else if (prefix.empty() && is_section(key)) {
                if (const toml::table* sub = node.as_table()) {
                    table(*sub, key + ".");
                } else {
                    error(line, cat({"'", key, "' is a section ([", key, "]); got ", type_name(node)}));
                }
            } else if (prefix.empty() && node.is_table()) {
                error(line, cat({"unknown section [", key, "]", suggestion(key)}));
            } else {
                error(line, cat({"unknown key '", key, "'", suggestion(key)}));
            }
        }
    }

private:
    void error(int line, const std::string& msg) {
        _found.emplace_back(line, cat({_path, ":", std::to_string(line), ": ", msg}));
    }

    void wrong_type(const option_spec& opt, const toml::node& n, int line, std::string_view want) {
        error(line, cat({"'", opt.key, "' must be ", want, ", got ", type_name(n)}));
    }

    void value(const option_spec& opt, const toml::node& n, int line) {
        std::visit([&](auto member) { assign(opt, member, n, line); }, opt.target);
    }

    template <class T>
    bool integer(const option_spec& opt, const toml::node& n, int line, T& out) {
        const auto* v = n.as_integer();
        if (!v) {
            wrong_type(opt, n, line, "an integer");
            return false;
        }
        int64_t x = v->get();
        if (x < 0 || static_cast<uint64_t>(x) < opt.min || static_cast<uint64_t>(x) > opt.max) {
            error(line, cat({"'", opt.key, "' = ", std::to_string(x), " is out of range [", std::to_string(opt.min),
                             ", ", std::to_string(opt.max), "]"}));
            return false;
        }
        out = static_cast<T>(x);
        return true;
    }

    void assign(const option_spec& opt, unsigned config::*m, const toml::node& n, int line) {
        integer(opt, n, line, _cfg.*m);
    }
    void assign(const option_spec& opt, uint64_t config::*m, const toml::node& n, int line) {
        integer(opt, n, line, _cfg.*m);
    }
    void assign(const option_spec& opt, bool config::*m, const toml::node& n, int line) {
        if (const auto* v = n.as_boolean()) {
            _cfg.*m = v->get();
        } else {
            wrong_type(opt, n, line, "a boolean (true or false)");
        }
    }
    void assign(const option_spec& opt, std::string config::*m, const toml::node& n, int line) {
        if (const auto* v = n.as_string()) {
            _cfg.*m = v->get();
        } else {
            wrong_type(opt, n, line, "a string");
        }
    }
    void assign(const option_spec& opt, std::vector<std::string> config::*m, const toml::node& n, int line) {
        const auto* arr = n.as_array();
        if (!arr) {
            wrong_type(opt, n, line, "an array of strings");
            return;
        }
        std::vector<std::string> items;
        for (const toml::node& item : *arr) {
            const auto* s = item.as_string();
            if (!s) {
                error(static_cast<int>(item.source().begin.line),
                      cat({"'", opt.key, "' must be an array of strings; an item is ", type_name(item)}));
                return;
            }
            items.push_back(s->get());
        }
        _cfg.*m = std::move(items);
    }
    template <class E>
    void assign(const option_spec& opt, E config::*m, const toml::node& n, int line) {
        const auto* v = n.as_string();
        std::string names;
        for (size_t i = 0; i < opt.choices.size(); ++i) {
            if (i) {
                names += ", ";
            }
            names += opt.choices[i];
            if (v && v->get() == opt.choices[i]) {
                _cfg.*m = static_cast<E>(i);
                return;
            }
        }
        if (!v) {
            wrong_type(opt, n, line, cat({"one of ", names}));
        } else {
            error(line, cat({"'", opt.key, "' = \"", v->get(), "\" is not one of ", names}));
        }
    }

public:
    // Errors in file order (a table's keys are visited in key order).
    void finish() {
        std::stable_sort(_found.begin(), _found.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
        for (auto& [line, msg] : _found) {
            _out.errors.push_back(std::move(msg));
        }
    }

private:
    std::vector<std::pair<int, std::string>> _found;
    const std::string& _path;
    config& _cfg;
    config_file_result& _out;
};

}  // namespace

config_file_result load_config_file(const std::string& path, config& cfg) {
    config_file_result out;
    toml::table root;
    try {
        root = toml::parse_file(path);
    } catch (const toml::parse_error& e) {
        const auto& where = e.source().begin;
        std::string msg(e.description());
        if (where.line == 0) {  // could not read the file at all
            out.errors.push_back(cat({path, ": ", msg}));
        } else {
            out.errors.push_back(
                cat({path, ":", std::to_string(where.line), ":", std::to_string(where.column), ": ", msg}));
        }
        return out;
    }
    loader l(path, cfg, out);
    l.table(root, "");
    l.finish();
    return out;
}

}  // namespace wsgate::core
